"""Check a store against the chunk checksums its stages recorded, naming any corrupted chunk or metadata file.

Every ``zarr.json`` is read first (a damaged or deleted one is a problem of its own); then
each chunk of each readable array is read and hashed by a task on the workers; a chunk
that no longer decodes counts as corrupted too, so one bad chunk never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import zarr
from distributed import Client

from mnist_dask.cluster import run_stage
from mnist_dask.data import layout
from mnist_dask.data.checksums import CHUNK_MD5_KEY, ChunkSource, recorded_checksums
from mnist_dask.data.info import INCOMPLETE_WHY
from mnist_dask.data.store import Store, stage_of


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where, and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def verify_store(store: Store, client: Client) -> tuple[int, list[Problem]]:
    """Recompute every recorded chunk checksum; returns (chunks checked, problems found)."""
    store.exists()  # refuses what is not an mnist-dask store, with one line
    found = layout.scan(store.url, store.storage_options)
    problems = [Problem(path, what) for path, what in found.problems]
    checks = []
    incomplete: list[str] = []  # stages whose writing was cut short: one line each, not one per array
    for path, document in sorted(found.nodes.items()):
        if any(path.startswith(f"{stage}/") for stage in incomplete):
            continue
        if document["node_type"] == "group":
            attrs = document.get("attributes", {}).get(layout.ATTRS_KEY)
            if isinstance(attrs, dict) and not attrs.get("complete"):
                incomplete.append(path)
                remedy = layout.remedy(store.url, path)
                problems.append(
                    Problem(path, f"stage is incomplete ({INCOMPLETE_WHY}); if no run is writing it, {remedy}")
                )
            elif isinstance(attrs, dict) and isinstance(attrs.get("arrays"), list):
                gone = [a for a in attrs["arrays"] if _missing(found, f"{path}/{a}")]
                problems += [Problem(f"{path}/{a}", "array written by the stage is missing") for a in gone]
            continue
        array = zarr.open_array(store.url, path=path, mode="r", storage_options=store.storage_options)
        expected = recorded_checksums(array)
        if expected is None:
            recorded = array.attrs.get(CHUNK_MD5_KEY)
            count = len(recorded) if isinstance(recorded, list) else 0
            problems.append(
                Problem(path, f"{int(np.prod(array.cdata_shape))} chunks but {count} usable checksums recorded")
            )
            continue
        source = ChunkSource(store.url, path, tuple(expected), layout.remedy(store.url, stage_of(path)))
        checks += [(path, index, array.chunks, source) for index in np.ndindex(*array.cdata_shape)]
    tasks = [
        dask.delayed(_chunk_problem)(store.url, store.storage_options, path, index, source)
        for path, index, _, source in checks
    ]
    outcomes = run_stage(client, "verify", tasks) if tasks else []
    for (path, index, chunks, _), what in zip(checks, outcomes):
        if what is not None:
            rows = f"rows {index[0] * chunks[0]}-{(index[0] + 1) * chunks[0] - 1}" if index else "the whole array"
            problems.append(Problem(f"{path} chunk {'.'.join(map(str, index)) or '0'} ({rows})", what))
    return len(checks), problems


def _missing(found: layout.Scan, path: str) -> bool:
    """An array the stage wrote that is neither readable nor already reported (its zarr.json damaged)."""
    if path in found.nodes:
        return False
    return not any(file == f"{path}/{layout.METADATA}" for file, _ in found.problems)


def _chunk_problem(
    url: str, storage_options: dict[str, Any] | None, path: str, index: tuple[int, ...], source: ChunkSource
) -> str | None:
    """What is wrong with one stored chunk (``checksum mismatch``, ``error: ...``), or None if it is intact."""
    try:
        array = zarr.open_array(url, path=path, mode="r", storage_options=storage_options)
    except Exception as exc:
        return f"error: cannot open the array ({type(exc).__name__})"
    _, what = source.problem(array, index)
    if what is None:
        return None
    return "checksum mismatch" if what.startswith("differs") else f"error: {what}"
