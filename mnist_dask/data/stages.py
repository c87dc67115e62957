"""Writing a stage safely: one writer at a time, incomplete until the last write, chunk checksums.

Every stage (ingest, transforms) writes through :func:`write_stage`. It takes a
cluster-wide ``distributed.Lock`` named after the store and stage, so concurrent jobs
that need the same missing stage write it once; it marks the stage incomplete, has the
workers write each chunk straight to Zarr while computing each chunk's MD5 in the same
pass (the chunk is computed once, for both), records the checksums on each array, and
marks the stage complete last. ``mnist-dask verify`` recomputes those checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, Lock

from mnist_dask.cluster import run_stage
from mnist_dask.data.store import Store

CHUNK_MD5_KEY = "mnist_dask_chunk_md5"


def write_stage(
    store: Store,
    client: Client,
    stage: str,
    arrays: dict[str, da.Array],
    fingerprint: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Write ``arrays`` (paths relative to the stage) as the complete stage ``stage``."""
    store.begin_stage(stage)
    writes, checksums = [], []
    for path, array in arrays.items():
        writes.append(array.to_zarr(**store.write_target(f"{stage}/{path}"), compute=False))
        checksums.append([dask.delayed(block_md5)(block) for block in array.to_delayed().ravel()])
    results = run_stage(client, f"write-{stage.removeprefix('derived/')}", [*writes, *checksums])
    for path, sums in zip(arrays, results[len(writes) :]):
        store.set_array_attr(f"{stage}/{path}", CHUNK_MD5_KEY, list(sums))
    store.complete_stage(stage, fingerprint, provenance)


@contextlib.contextmanager
def stage_lock(client: Client, store: Store, stage: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the cluster-wide lock for writing ``stage`` of ``store`` (on ``client``'s scheduler)."""
    with client.as_current():
        lock = Lock(f"mnist-dask:{store.url}:{stage}")
    lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        lock.release()


def produce_stage(
    store: Store,
    client: Client,
    stage: str,
    fingerprint: dict[str, Any],
    force: bool,
    build: Callable[[], tuple[dict[str, da.Array], dict[str, Any]]],
    on_conflict: Callable[[], None],
) -> str:
    """Write a stage unless it is complete with this fingerprint; returns ``written`` or ``skipped``.

    Under the stage's lock: a complete stage with the same fingerprint is skipped, a
    complete one with another fingerprint calls ``on_conflict`` (which raises) unless
    ``force``; otherwise ``build()`` gives the arrays and provenance to write.
    """
    with stage_lock(client, store, stage):
        if store.is_complete(stage, fingerprint) and not force:
            return "skipped"
        if store.is_complete(stage) and not force:
            on_conflict()
        arrays, provenance = build()
        write_stage(store, client, stage, arrays, fingerprint, provenance)
        return "written"


def block_md5(block: np.ndarray) -> str:
    """MD5 of a chunk's values (C order), independent of the codec it is stored with."""
    return hashlib.md5(np.ascontiguousarray(block).data).hexdigest()
