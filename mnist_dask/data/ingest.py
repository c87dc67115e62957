"""The ingest stage: read a source on the workers, validate it, write ``raw/`` to the store.

Order matters for safety: the source is read and validated completely (on a worker)
before the store is touched, so bad input leaves an existing store exactly as it was;
the ``raw`` stage is then marked incomplete, written chunk by chunk by the workers,
and marked complete last.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
from distributed import Client

from mnist_dask.cluster import run_stage
from mnist_dask.data.defaults import DEFAULT_CHUNK
from mnist_dask.data.sources import SPLITS, Source
from mnist_dask.data.stages import block_md5, produce_stage
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError

STAGE = "raw"


@dataclass(frozen=True)
class IngestOutcome:
    """What ingest did: ``written`` or ``skipped``, and the row count of each split."""

    action: str
    rows: dict[str, int]


def ingest(
    source: Source, store: Store, client: Client, *, chunk_size: int = DEFAULT_CHUNK, force: bool = False
) -> IngestOutcome:
    """Ingest ``source`` into ``store``'s ``raw`` stage unless the same inputs are already there."""
    run = uuid.uuid4().hex  # task keys unique per run: concurrent ingests must not share results
    checksums = client.submit(source.input_checksums, pure=False, key=f"ingest-checksums-{run}").result()
    fingerprint = fingerprint_of(source, checksums, chunk_size)

    def conflict() -> None:
        raise UserError(conflict_message(store, fingerprint))

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

    action = produce_stage(store, client, STAGE, fingerprint, force, build, conflict)
    attrs = store.stage_attrs(STAGE) or {}
    return IngestOutcome(action, attrs["provenance"]["rows"])


def fingerprint_of(source: Source, checksums: dict[str, str], chunk_size: int) -> dict:
    """What makes a raw stage this ingest's: the source, its inputs' content MD5s and the chunk size."""
    return {"source": str(source), "inputs": checksums, "chunk_size": chunk_size}


def already_ingested(source: Source, store: Store, chunk_size: int = DEFAULT_CHUNK) -> dict[str, int] | None:
    """Row counts when ``store`` already holds exactly this ingest, computed here without a cluster; else None.

    A complete stage from other inputs is refused (as :func:`ingest` would without ``force``).
    For a local cluster only: the inputs are read where the workers would read them.
    """
    if not store.is_complete(STAGE):
        return None
    fingerprint = fingerprint_of(source, source.input_checksums(), chunk_size)
    if not store.is_complete(STAGE, fingerprint):
        raise UserError(conflict_message(store, fingerprint))
    attrs = store.stage_attrs(STAGE) or {}
    return dict(attrs["provenance"]["rows"])


def conflict_message(store: Store, fingerprint: dict) -> str:
    """Why the store's complete raw stage is not this ingest's, naming what differs."""
    stored = (store.stage_attrs(STAGE) or {}).get("fingerprint") or {}
    if stored.get("chunk_size") != fingerprint["chunk_size"] and stored.get("inputs") == fingerprint["inputs"]:
        return (
            f"{store}: already holds these images in chunks of {stored.get('chunk_size')}, not --chunk-size "
            f"{fingerprint['chunk_size']}; pass --chunk-size {stored.get('chunk_size')}, or --force to rewrite it"
        )
    if stored.get("inputs") == fingerprint["inputs"]:
        return f"{store}: already holds these images, ingested from {stored.get('source')}; use --force to replace it"
    return (
        f"{store}: already holds MNIST ingested from other inputs ({stored.get('source')}); use --force to replace it"
    )


def _summarise(split: tuple[np.ndarray, np.ndarray]) -> dict:
    """Row count and content MD5s of one loaded split (runs on the worker holding it)."""
    images, labels = split
    return {"rows": len(images), "images": block_md5(images), "labels": block_md5(labels)}
