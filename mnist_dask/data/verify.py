"""Check a store against the chunk checksums its stages recorded, naming any corrupted chunk.

Each chunk is read and hashed by a task on the workers; a chunk that no longer decodes
counts as corrupted too, so one bad chunk never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import zarr
from distributed import Client

from mnist_dask.cluster import run_stage
from mnist_dask.data.stages import CHUNK_MD5_KEY, block_md5
from mnist_dask.data.store import Store


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where, and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def verify_store(store: Store, client: Client) -> tuple[int, list[Problem]]:
    """Recompute every recorded chunk checksum; returns (chunks checked, problems found)."""
    problems, checks = [], []
    for path, node in store.walk():
        if isinstance(node, zarr.Array):
            expected = node.attrs.get(CHUNK_MD5_KEY)
            if expected is None:
                continue
            if not isinstance(expected, list):
                problems.append(Problem(path, "its recorded checksums are unreadable"))
                continue
            grid = list(np.ndindex(*node.cdata_shape))
            if len(grid) != len(expected):
                problems.append(Problem(path, f"{len(grid)} chunks but {len(expected)} checksums recorded"))
                continue
            checks += [(path, index, md5, node.chunks) for index, md5 in zip(grid, expected)]
        elif "mnist_dask" in node.attrs and not node.attrs["mnist_dask"].get("complete"):
            problems.append(Problem(path, "stage is incomplete"))
    tasks = [dask.delayed(_chunk_md5)(store.url, store.storage_options, path, index) for path, index, _, _ in checks]
    actual = run_stage(client, "verify", tasks) if tasks else []
    for (path, index, md5, chunks), found in zip(checks, actual):
        if found != md5:
            rows = f"rows {index[0] * chunks[0]}-{(index[0] + 1) * chunks[0] - 1}"
            what = "checksum mismatch" if not found.startswith("error") else found
            problems.append(Problem(f"{path} chunk {'.'.join(map(str, index))} ({rows})", what))
    return len(checks), problems


def _chunk_md5(url: str, storage_options: dict[str, Any] | None, path: str, index: tuple[int, ...]) -> str:
    """MD5 of one stored chunk's values, or ``error: ...`` if it cannot be read or decoded."""
    try:
        array = zarr.open_array(url, path=path, mode="r", storage_options=storage_options)
        return block_md5(np.asarray(array.blocks[index]))
    except Exception as exc:  # a corrupt chunk can fail inside any codec
        return f"error: cannot decode ({type(exc).__name__})"
