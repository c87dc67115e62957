"""An exclusive operating-system lock on a file, held by one process at a time, naming its holder.

The lock is an advisory ``flock`` on a small file that records its holder (pid, host, start
time and what it does) for the messages of processes that find it taken. The operating
system releases it when the holding process ends, however it ends, so a crash never leaves
a stale lock; the file is removed on release. Run folders (:mod:`mnist_dask.jobs.run_lock`)
refuse a second holder; store stages (:mod:`mnist_dask.data.stages`) make it wait.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

Holder = dict[str, str | int]  # what the lock file says about its holder: pid, host, started, and the caller's fields


@contextlib.contextmanager
def exclusive_file_lock(path: Path, about: dict[str, str], on_busy: Callable[[Holder], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed; removed on release).

    When another process holds it, ``on_busy`` is called once with what its file says about
    that holder (empty if unreadable): raising refuses, returning waits until it is free.
    ``about`` is recorded in the file next to this process's pid, host and start time.
    """
    fd = _acquire(Path(path), on_busy)
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **about,
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()  # while still locked: nobody can hold the file we remove
        os.close(fd)


def describe(holder: Holder) -> str:
    """`` (pid P on host H, started T)`` for a holder, or nothing when its file was not readable."""
    if not {"pid", "host", "started"} <= holder.keys():
        return ""
    return f" (pid {holder['pid']} on {holder['host']}, started {holder['started']})"


def _acquire(path: Path, on_busy: Callable[[Holder], None]) -> int:
    """Open and lock the lock file; retried when the file was replaced between opening and locking."""
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    on_busy(_read_holder(fd))  # raises to refuse
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False  # the holder we waited on removed it on release: lock the new one
        if same:
            return fd
        os.close(fd)


def _read_holder(fd: int) -> Holder:
    """What the lock file says about its holder, or nothing if it is not readable (yet)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, OSError):
        return {}
    return holder if isinstance(holder, dict) else {}
