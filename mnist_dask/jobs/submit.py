"""Submit a job, or the whole study, to a Dask cluster: its driver runs as a task on a worker; the submitter exits.

The job file, store and source are validated where the user is; the driver task then runs
``run_job`` on a worker with that worker's client (seceded from its thread pool, so the
worker keeps computing the job's own tasks), under the span ``mnist-dask-run/<run id>``.
``fire_and_forget`` keeps the driver alive on the scheduler after the submitter disconnects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed import Client, fire_and_forget, span, worker_client

from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.jobs.driver_worker import requeued_note
from mnist_dask.jobs.records import SPAN_TAG, STUDY_JOB, RunStatus, driver_alive
from mnist_dask.jobs.spec import Job
from mnist_dask.jobs.study import StudyJob

DRIVER_PREFIX = "mnist-dask-driver"
_ACCEPT_TIMEOUT = 30.0  # seconds to wait for the scheduler to hold the driver task


def submit_job(job: Job, store: Store, client: Client, run_dir: Path, source: Source | None = None) -> str:
    """Start ``job`` on the cluster and return its run id (the run folder's name) once it is queued."""
    return _submit(client, store, run_dir, job.name, {}, lambda record: (drive_job, job, store, record, source))


def submit_study(jobs: list[StudyJob], store: Store, client: Client, study_dir: Path, force: bool = False) -> str:
    """Start the whole study on the cluster as one driver task; returns its run id (the study folder's name)."""
    names = {"jobs": [item.job.name for item in jobs]}
    return _submit(client, store, study_dir, STUDY_JOB, names, lambda record: (drive_study, jobs, store, record, force))


def drive_study(jobs: list[StudyJob], store: Store, record: dict[str, Any], force: bool) -> dict[str, Any]:
    """(On a worker) run the study with the worker's client; returns its ledger."""
    from mnist_dask.jobs.study import run_study

    def study(client: Client, status: RunStatus) -> dict[str, Any]:
        return run_study(jobs, store, client, status.run_dir, force=force, log=_no_echo, status=status)["ledger"]

    return _drive(record, study)


def drive_job(job: Job, store: Store, record: dict[str, Any], source: Source | None) -> dict[str, Any]:
    """(On a worker) run the job with the worker's client; returns the result's metrics."""
    from mnist_dask.jobs.driver import run_job

    def run(client: Client, status: RunStatus) -> dict[str, Any]:
        result = run_job(job, store, client, status.run_dir, source=source, log=_no_echo, status=status)
        return dict(result.get("metrics", {}))

    return _drive(record, run)


def _submit(
    client: Client,
    store: Store,
    folder: Path,
    name: str,
    fields: dict[str, Any],
    driver: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> str:
    """Record the run as queued in ``folder``, hand its driver task to the scheduler, return its run id."""
    folder = Path(folder).absolute()
    run_id = folder.name
    key = f"{DRIVER_PREFIX}-{run_id}"
    address = client.scheduler_info()["address"]
    queued = RunStatus(folder, run_id, name, client=client, driver_key=key, scheduler=address, store=store.url)
    queued.queued(**fields)
    function, *args = driver(dict(queued.record))
    future = client.submit(function, *args, key=key, pure=False)
    fire_and_forget(future)
    _wait_until_held(client, key, future)
    return run_id


def _drive(record: dict[str, Any], work: Callable[[Client, RunStatus], dict[str, Any]]) -> dict[str, Any]:
    """(On a worker) carry on the run's record with the worker's client and do the work under the run's span."""
    with worker_client() as client:
        status = SubmittedRunStatus.resume(record, client)
        try:
            with span(SPAN_TAG, status.record["run_id"]):
                return work(client, status)
        except BaseException as exc:
            if status.record["state"] != "failed":  # failed before the work could say so (or its worker went)
                status.failed(exc)
            raise


class SubmittedRunStatus(RunStatus):
    """The record of a run whose driver is a task on a worker: a client closed under the driver while the scheduler
    still answers is its worker's doing, and the run is queued again (mnist_dask.jobs.driver_worker)."""

    def failed(self, exc: BaseException) -> None:
        """Record the failure; or, when the driver's worker went away under a live scheduler, the run queued again."""
        note = requeued_note(self.client, self.record.get("stage"))
        if note is None:
            super().failed(exc)
        elif self.record["state"] != "queued":  # once (_drive calls this again after run_job did), or not begun
            self.requeued(note)


def _wait_until_held(client: Client, key: str, future: Any) -> None:
    """Return once the scheduler holds the driver task: the submission must reach it before we disconnect."""
    deadline = time.monotonic() + _ACCEPT_TIMEOUT
    while not driver_alive(client, key):
        if future.done() or time.monotonic() > deadline:
            break
        time.sleep(0.05)


def _no_echo(line: str) -> None:
    """A driver on a worker has no terminal: its log lives in the run's status record."""
