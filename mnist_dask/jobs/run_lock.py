"""An exclusive lock on a run folder for a run's duration, so two runs never share (and overwrite) one folder.

The lock is an advisory ``flock`` on ``<run folder>/.run.lock`` (:mod:`mnist_dask.file_lock`),
which records its holder (pid, host, job, start time) for the error message. The operating
system releases it when the holding process ends, however it ends, so a crashed run never
leaves a stale lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from mnist_dask.errors import UserError
from mnist_dask.file_lock import Holder, describe, exclusive_file_lock

LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, job: str) -> Iterator[None]:
    """Hold ``run_dir`` for one run of ``job``; a folder held by a live run is a one-line UserError."""

    def refuse(holder: Holder) -> None:
        of_job = f" of job {holder['job']}{describe(holder)}" if "job" in holder and describe(holder) else ""
        raise UserError(
            f"{run_dir}: in use by a running run{of_job}; wait for it to finish or pass --run-dir to use another folder"
        )

    with exclusive_file_lock(Path(run_dir) / LOCK_NAME, {"job": job}, refuse):
        yield
