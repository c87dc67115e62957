"""The raw stage's identity: the fingerprint an ingest gives it, and whether a store already holds
exactly that ingest, told from the store and the inputs alone (no cluster, no dask import).
"""

from __future__ import annotations

import shlex
from typing import Any

from mnist_dask.data.defaults import DEFAULT_CHUNK
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError

STAGE = "raw"


def fingerprint_of(source: Source, checksums: dict[str, str], chunk_size: int) -> dict[str, Any]:
    """What makes a raw stage this ingest's: the source, its inputs' content MD5s and the chunk size."""
    return {"source": str(source), "inputs": checksums, "chunk_size": chunk_size}


def already_ingested(source: Source, store: Store, chunk_size: int = DEFAULT_CHUNK) -> dict[str, int] | None:
    """Row counts when ``store`` already holds exactly this ingest, computed here without a cluster; else None.

    A complete stage from other inputs is refused (as :func:`ingest` would without ``force``).
    For the ``ingest`` command and a local cluster only: the inputs are read where the workers would read them.
    """
    if not store.is_complete(STAGE):
        return None
    fingerprint = fingerprint_of(source, source.input_checksums(), chunk_size)
    if not store.is_complete(STAGE, fingerprint):
        raise UserError(conflict_message(store, fingerprint, ingest_command=True))
    attrs = store.stage_attrs(STAGE) or {}
    return dict(attrs["provenance"]["rows"])


def conflict_message(store: Store, fingerprint: dict[str, Any], ingest_command: bool) -> str:
    """Why the store's complete raw stage is not this ingest's, naming what differs and a remedy that works
    from the command the user ran: ``ingest`` has --chunk-size and --force; a job or study ingests only when
    given a source, so it can do without one, or have ``mnist-dask ingest --force`` rewrite the stage first."""
    stored = (store.stage_attrs(STAGE) or {}).get("fingerprint") or {}
    same_inputs = stored.get("inputs") == fingerprint["inputs"]
    if ingest_command:
        if stored.get("chunk_size") != fingerprint["chunk_size"] and same_inputs:
            return (
                f"{store}: already holds these images in chunks of {stored.get('chunk_size')}, not --chunk-size "
                f"{fingerprint['chunk_size']}; pass --chunk-size {stored.get('chunk_size')}, or --force to rewrite it"
            )
        if same_inputs:
            return (
                f"{store}: already holds these images, ingested from {stored.get('source')}; use --force to replace it"
            )
        return (
            f"{store}: already holds MNIST ingested from other inputs ({stored.get('source')}); "
            "use --force to replace it"
        )
    store_arg, source_arg = shlex.quote(str(store)), shlex.quote(fingerprint["source"])
    rewrite = f"mnist-dask ingest --store {store_arg} --source {source_arg} --force"  # default chunks: a job's
    if stored.get("chunk_size") != fingerprint["chunk_size"] and same_inputs:
        held = f"these images in chunks of {stored.get('chunk_size')}, not the {fingerprint['chunk_size']} a job uses"
    elif same_inputs:
        held = f"these images, ingested from {stored.get('source')}"
    else:
        held = f"MNIST ingested from other inputs ({stored.get('source')})"
    return f"{store}: already holds {held}; give no --source to use them as they are, or rewrite them first: {rewrite}"
