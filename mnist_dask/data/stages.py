"""Writing a stage safely: one writer at a time, incomplete until the last write, chunk checksums.

Every stage (ingest, transforms) writes through :func:`write_stage`, under the stage's
lock (:func:`stage_lock`: an operating-system file lock beside a local store, held by the
command's own process, and a cluster-wide ``distributed.Lock`` named after the store and
stage), so concurrent commands or jobs that need the same missing stage write it once; it
marks the stage incomplete, has the workers write each chunk straight to Zarr while
computing each chunk's MD5 in the same pass (the chunk is computed once, for both),
records the checksums on each array, and marks the stage complete last. ``mnist-dask
verify`` recomputes those checksums.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
from dask.utils import format_bytes
from distributed import Client, Lock
from fsspec.implementations.local import LocalFileSystem

from mnist_dask.cluster import announce_dashboard, run_stage
from mnist_dask.data import layout
from mnist_dask.data.checksums import CHUNK_MD5_KEY, block_md5
from mnist_dask.data.store import Store
from mnist_dask.file_lock import Holder, describe, exclusive_file_lock

__all__ = ["CHUNK_MD5_KEY", "block_md5", "produce_stage", "stage_lock", "write_stage"]


def write_stage(
    store: Store,
    client: Client,
    stage: str,
    arrays: dict[str, da.Array],
    fingerprint: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Write ``arrays`` (paths relative to the stage) as the complete stage ``stage``."""
    label = f"write-{stage.removeprefix('derived/')}"
    store.begin_stage(stage)  # first, so that a --force rewrite's old arrays no longer count against the room
    _warn_if_it_may_not_fit(client, store, label, sum(float(array.nbytes) for array in arrays.values()))
    writes, checksums = [], []
    for path, array in arrays.items():
        writes.append(array.to_zarr(**store.write_target(f"{stage}/{path}"), compute=False))
        checksums.append([dask.delayed(block_md5)(block) for block in array.to_delayed().ravel()])
    results = run_stage(client, label, [*writes, *checksums])
    for path, sums in zip(arrays, results[len(writes) :]):
        store.set_array_attr(f"{stage}/{path}", CHUNK_MD5_KEY, list(sums))
    store.complete_stage(stage, fingerprint, provenance, arrays=list(arrays))


def _warn_if_it_may_not_fit(client: Client, store: Store, label: str, nbytes: float) -> None:
    """Say before a long write when a local store's disk has less room than the stage's uncompressed size.

    Only a warning: Zstd stores MNIST-like arrays 3-5x smaller. A disk that does fill
    up is still the one-line error, with the stage left incomplete.
    """
    location = layout.Location.of(store.url, store.storage_options)
    if math.isnan(nbytes) or not isinstance(location.fs, LocalFileSystem):
        return  # a size not known before computing (nan), or an object store's room
    try:  # the store's folder exists: the stage was begun in it
        free = shutil.disk_usage(location.root).free
    except OSError:  # not ours to judge: the write itself names any real problem
        return
    if nbytes > free:
        room = f"{format_bytes(int(nbytes))} before compression, {format_bytes(free)} free on the disk of {store.url}"
        announce_dashboard(client)  # the cluster's line first, as when the stage starts
        print(f"{label}: warning: {room}; it may not fit", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage_lock(client: Client, store: Store, stage: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the locks for writing ``stage`` of ``store``: one writer at a time, whichever command it runs in.

    A store on a local (or shared POSIX) filesystem is also locked with an operating-system
    file lock held by this driver process (:func:`stage_file_lock`), because every plain
    command starts its own cluster and never sees another's ``distributed.Lock``. The
    cluster-wide lock (on ``client``'s scheduler) still guards remote stores on a shared scheduler.
    """
    with stage_file_lock(store, stage), client.as_current():
        lock = Lock(f"mnist-dask:{store.url}:{stage}")
        lock.acquire(timeout=timeout)
        try:
            yield
        finally:
            lock.release()


@contextlib.contextmanager
def stage_file_lock(store: Store, stage: str) -> Iterator[None]:
    """Hold ``<store folder>/.<store name>.<stage>.lock`` for a local store (nothing for a remote one).

    The lock file lies beside the store, not in it, so it never shows up as a store's content
    (and a store that does not exist yet, being ingested, can be locked too). A second command
    says once on stderr that it waits, then waits for the first to finish the stage.
    """
    location = layout.Location.of(store.url, store.storage_options)
    if not isinstance(location.fs, LocalFileSystem):
        yield
        return
    root = Path(location.root)
    path = root.parent / f".{root.name}.{stage.replace('/', '~')}.lock"

    def wait(holder: Holder) -> None:
        command = f" '{holder['command']}'" if "command" in holder else ""
        print(
            f"{stage}: waiting for another command{command}{describe(holder)} writing it in {store.url}",
            file=sys.stderr,
            flush=True,
        )

    with contextlib.ExitStack() as held:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_file_lock(path, {"command": _command_line(), "stage": stage}, wait))
        except OSError as exc:  # a read-only or full disk, ...: named by the store, as its own write would be
            raise OSError(exc.errno, exc.strerror, store.url) from None
        yield


def _command_line() -> str:
    """This process's command, as the user typed it (program name without its folder), for the lock file."""
    words = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(words)[:200]


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

    Under the stage's lock (a second command waits for the first's): a complete stage with
    the same fingerprint is skipped, a complete one with another fingerprint calls ``on_conflict`` (which raises) unless
    ``force``; otherwise ``build()`` gives the arrays and provenance to write. With ``force``
    the stage's current metadata is not read at all, so a damaged stage can be rewritten.
    """
    if not force and store.is_complete(stage, fingerprint):
        return "skipped"  # complete is the last write: no lock needed (nor a writable folder to lock in)
    with stage_lock(client, store, stage):
        if not force and store.is_complete(stage, fingerprint):
            return "skipped"
        if not force and store.is_complete(stage):
            on_conflict()
        arrays, provenance = build()
        write_stage(store, client, stage, arrays, fingerprint, provenance)
        return "written"
