"""The ingest stage: read a source on the workers, validate it, write ``raw/`` to the store.

Order matters for safety: the source is read and validated completely (on a worker)
before the store is touched, so bad input leaves an existing store exactly as it was;
the ``raw`` stage is then marked incomplete, written chunk by chunk by the workers,
and marked complete last.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client

from mnist_dask.cluster import run_stage
from mnist_dask.data.defaults import DEFAULT_CHUNK
from mnist_dask.data.raw_stage import STAGE, conflict_message, fingerprint_of
from mnist_dask.data.sources import SPLITS, Source
from mnist_dask.data.stages import block_md5, produce_stage
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError


@dataclass(frozen=True)
class IngestOutcome:
    """What ingest did: ``written`` or ``skipped``, and the row count of each split."""

    action: str
    rows: dict[str, int]
    dropped: tuple[str, ...] = ()  # derived stages deleted because they were made from the images replaced


def ingest(
    source: Source,
    store: Store,
    client: Client,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    force: bool = False,
    ingest_command: bool = False,
) -> IngestOutcome:
    """Ingest ``source`` into ``store``'s ``raw`` stage unless the same inputs are already there.

    ``ingest_command``: the caller is ``mnist-dask ingest`` (whose --chunk-size and --force a refusal may
    advise), not a job or study."""
    run = uuid.uuid4().hex  # task keys unique per run: concurrent ingests must not share results
    checksums = client.submit(source.input_checksums, pure=False, key=f"ingest-checksums-{run}").result()
    fingerprint = fingerprint_of(source, checksums, chunk_size)

    def conflict() -> None:
        raise UserError(conflict_message(store, fingerprint, ingest_command))

    def build() -> tuple[dict[str, da.Array], dict]:
        """Read and validate on the workers first: bad input never reaches the store."""
        loaded = {
            split: dask.delayed(source.load_split, pure=False)(split, dask_key_name=f"ingest-read-{split}-{run}")
            for split in SPLITS
        }
        loaded = dict(zip(SPLITS, client.persist(list(loaded.values()))))
        summaries = dict(
            zip(
                SPLITS,
                run_stage(
                    client,
                    "ingest-validate",
                    [dask.delayed(_summarise)(loaded[s]) for s in SPLITS],
                    show_progress=False,
                    announce=False,
                ),
            )
        )
        arrays = {}
        for split in SPLITS:
            rows = summaries[split]["rows"]
            if rows == 0:  # every source refuses empty files itself; this guards the store regardless
                raise UserError(f"{source}: the {split} split holds 0 images; nothing was written")
            images = da.from_delayed(loaded[split][0], shape=(rows, 28, 28), dtype=np.uint8)
            labels = da.from_delayed(loaded[split][1], shape=(rows,), dtype=np.uint8)
            arrays[f"{split}/images"] = images.rechunk((chunk_size, 28, 28))
            arrays[f"{split}/labels"] = labels.rechunk(chunk_size)
        return arrays, {
            "source": str(source),
            "input_md5": checksums,
            "rows": {s: summaries[s]["rows"] for s in SPLITS},
            "array_md5": {f"{s}/{k}": summaries[s][k] for s in SPLITS for k in ("images", "labels")},
        }

    replaced = force and _stored_fingerprint(store) not in (None, fingerprint)
    action = produce_stage(store, client, STAGE, fingerprint, force, build, conflict)
    dropped = _drop_derived(store) if replaced else ()
    attrs = store.stage_attrs(STAGE) or {}
    return IngestOutcome(action, attrs["provenance"]["rows"], dropped)


def _stored_fingerprint(store: Store) -> dict[str, Any] | None:
    """The raw stage's recorded fingerprint; None when there is none, or its metadata is too damaged to tell
    (the stages made from it are then judged when next used, by their own recorded inputs)."""
    try:
        return (store.stage_attrs(STAGE) or {}).get("fingerprint")
    except UserError:
        return None


def _drop_derived(store: Store) -> tuple[str, ...]:
    """Delete every derived stage: each was made from the images just replaced, so none may stay 'complete'."""
    dropped: list[str] = []
    for stage in store.dependents(STAGE):
        if stage in store.stages():  # not already deleted as a dependent of an earlier one
            dropped += store.drop_stage(stage, dependents=True)
    return tuple(dropped)


def _summarise(split: tuple[np.ndarray, np.ndarray]) -> dict:
    """Row count and content MD5s of one loaded split (runs on the worker holding it)."""
    images, labels = split
    return {"rows": len(images), "images": block_md5(images), "labels": block_md5(labels)}
