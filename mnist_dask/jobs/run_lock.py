"""An exclusive lock on a run folder for a run's duration, so two runs never share (and overwrite) one folder.

The lock is an advisory ``flock`` on ``<run folder>/.run.lock``, which records its holder
(pid, host, job, start time) for the error message. The operating system releases it when
the holding process ends, however it ends, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mnist_dask.errors import UserError

LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, job: str) -> Iterator[None]:
    """Hold ``run_dir`` for one run of ``job``; a folder held by a live run is a one-line UserError."""
    path = Path(run_dir) / LOCK_NAME
    fd = _acquire(path, run_dir)
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": job,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: nobody can hold the file we remove
        os.close(fd)


def _acquire(path: Path, run_dir: Path) -> int:
    """Open and lock the lock file; retried when the file was replaced between opening and locking."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise UserError(
                f"{run_dir}: in use by a running run{holder}; wait for it to finish "
                "or pass --run-dir to use another folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False  # the holder we waited on removed it on release: lock the new one
        if same:
            return fd
        os.close(fd)


def _describe_holder(fd: int) -> str:
    """`` of job X (pid P on host H, started T)`` from the lock file, or nothing if it is not readable."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (
            f" of job {holder['job']} (pid {holder['pid']} on {holder['host']}, started {holder['started']})"
            if isinstance(holder, dict)
            else ""
        )
    except (ValueError, KeyError, OSError):
        return ""
