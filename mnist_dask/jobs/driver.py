"""Run a job end to end on the cluster: ingest, the job's experiment, then the run folder's result and report.

Stages already complete in the store are skipped. A run writes its outputs into ``.pending/`` in its folder and
moves them up only once it has finished, ``result.json`` last: a run folder with a result is a finished run, and a
run that fails or is interrupted leaves the previous finished run's results as they were.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, span

from mnist_dask import __version__
from mnist_dask.cluster import killed_worker_error, lost_scheduler, lost_scheduler_error
from mnist_dask.code_digest import code_digest
from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source, parse_source
from mnist_dask.data.store import Store
from mnist_dask.errors import Terminated, UserError
from mnist_dask.experiments import EXPERIMENTS, Context, ParamsError, stage_rows
from mnist_dask.jobs.driver_worker import own_worker_scheduler, requeued_note
from mnist_dask.jobs.ledger import scored
from mnist_dask.jobs.records import (
    PENDING_OUTPUTS,
    RESULT_FILE,
    RUN_OUTPUTS,
    RunStatus,
    read_result,
    write_run_json,
)
from mnist_dask.jobs.run_lock import run_folder_lock
from mnist_dask.jobs.spec import Job


def run_job(
    job: Job,
    store: Store,
    client: Client,
    run_dir: Path,
    source: Source | None = None,
    log: Callable[[str], None] = print,
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """Run ``job`` and return its result (also written to ``run_dir/result.json``).

    Its progress is kept in ``run_dir/status.json`` (see mnist_dask.jobs.records). The run
    holds ``run_dir`` exclusively (mnist_dask.jobs.run_lock): a second run of the same folder
    at the same time fails with one line before touching anything in it. Its outputs replace
    the folder's earlier ones only once it has finished (:func:`_publish`).
    """
    run_dir = Path(run_dir).absolute()  # workers would resolve a relative one in their own folders
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(run_dir, job.name):  # a second run of the folder fails here, touching nothing
        pending = run_dir / PENDING_OUTPUTS
        _remove(pending)  # what a run killed before it finished left
        pending.mkdir()
        run_status = status or RunStatus(run_dir, run_dir.name, job.name)
        run_status.running()

        def logged(line: str) -> None:
            run_status.log(line)
            log(line)

        try:
            with _sigterm_as_interrupt():  # `kill PID` ends the run as Ctrl-C does, recorded, not left 'running'
                result = _run_job(job, store, client, run_dir, source, logged, run_status)
        except BaseException as exc:
            stage = run_status.record.get("stage")
            if (run_dir / RESULT_FILE).exists():
                logged(f"the previous finished run's results in {run_dir} are kept")
            requeued = requeued_note(client, stage)  # a submitted driver (a study's too) whose worker was stopped
            if requeued is not None:
                run_status.requeued(requeued)
            elif lost_scheduler(client, exc):  # its record says so in one line, not as the cancelled task
                run_status.failed(lost_scheduler_error(client, stage, scheduler=own_worker_scheduler()))
            else:
                run_status.failed(killed_worker_error(client, exc) or exc)
            raise
        finally:
            _remove(pending)
        run_status.finished(result)
    return result


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so the run records
    its end; a second SIGTERM ends the process at once. Elsewhere (a driver in a worker's thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _publish(pending: Path, run_dir: Path) -> None:
    """Replace the earlier run's outputs in ``run_dir`` with the finished run's from ``pending``.

    The earlier result.json goes first and the new one comes last, so the folder never holds a
    result.json beside another run's report or predictions, even if this is cut short (then neither run's
    results are left: what was not moved yet goes with the pending folder).
    """
    for name in RUN_OUTPUTS:  # result.json first
        _remove(run_dir / name)
    for name in reversed(RUN_OUTPUTS):
        if (pending / name).exists():
            (pending / name).replace(run_dir / name)  # a rename within the folder: nothing is copied


def _remove(path: Path) -> None:
    """Remove a file or a folder (a Zarr store) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check_job_fits(job: Job, store: Store) -> None:
    """Refuse parameters that the store's raw row counts rule out (a sample larger than its input, more neighbours
    than training rows) in one line naming the job file and the key, before any cluster work; a store without raw
    yet is checked once ingested."""
    check = EXPERIMENTS[job.experiment].check
    if check is None or not store.is_complete("raw"):
        return
    with _naming_the_job_file(job):
        check(job.params, stage_rows(store, "raw"))


@contextmanager
def _naming_the_job_file(job: Job) -> Iterator[None]:
    """A parameter the data cannot support, as one line naming the job file: ``<job file>: params.<key> ...``."""
    try:
        yield
    except ParamsError as exc:
        raise UserError(f"{job.path}: {exc}") from None


def _run_job(
    job: Job,
    store: Store,
    client: Client,
    run_dir: Path,
    source: Source | None,
    log: Callable[[str], None],
    status: RunStatus,
) -> dict[str, Any]:
    """Ingest (when the store lacks raw/ or a source is given), run the experiment, finish the run folder."""
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "job": job.name,
        "job_file": job.path,
        "job_fingerprint": job.fingerprint,
        "description": job.description,
        "experiment": job.experiment,
        "params": job.params_dict(),
        "store": store.url,
        "package_version": __version__,
        "package_code": code_digest(),  # the source files' digest: the version alone does not say which code ran
    }
    with _timed(timings, status, "ingest", log):
        if source is not None or not store.is_complete("raw"):
            outcome = ingest(source or parse_source(None), store, client)
            log(f"ingest: {outcome.action} ({', '.join(f'{k} {v:,}' for k, v in outcome.rows.items())})")
    result["inputs"] = (store.stage_attrs("raw") or {}).get("fingerprint")
    check_job_fits(job, store)  # again: the rows of what was just ingested
    context = Context(  # the experiment writes its files among the pending outputs
        store=store,
        client=client,
        run_dir=run_dir / PENDING_OUTPUTS,
        log=log,
        stage=lambda name: _timed(timings, status, name, log),
    )
    with _timed(timings, status, job.experiment, log), span(job.experiment), _naming_the_job_file(job):
        result.update(EXPERIMENTS[job.experiment].run(context, job.params))
    return _finish(job, result, timings, run_dir, store, log)


def _finish(
    job: Job, result: dict[str, Any], timings: dict[str, float], run_dir: Path, store: Store, log: Callable[[str], None]
) -> dict[str, Any]:
    """Attach published figures and timings, write result.json and the report among the pending outputs, then
    publish them in ``run_dir``."""
    result["timings_s"] = timings
    result = scored(job.expect, job.differs, result)
    for key, entry in result.get("expected", {}).items():
        if entry["status"] == "missing":
            log(f"warning: {job.path}: expect.{key}: the result has no figure of that name (a typo?)")
    pending = run_dir / PENDING_OUTPUTS
    write_run_outputs(result, pending, store, log)
    _publish(pending, run_dir)
    return result


def write_run_outputs(result: dict[str, Any], run_dir: Path, store: Store, log: Callable[[str], None]) -> None:
    """Write ``run_dir/result.json`` atomically, then its ``report.html`` from what result.json holds.

    Shared by a run that finishes (into its pending outputs) and by a study that re-scores a finished run
    (mnist_dask.jobs.study).
    """
    write_run_json(run_dir / RESULT_FILE, result)
    try:  # after result.json: a report failure must not lose the finished run
        from mnist_dask.report.render import write_report  # matplotlib only when a report is written

        write_report(read_result(run_dir), run_dir, store)  # what result.json holds, as `mnist-dask report` reads it
    except Exception as exc:
        log(f"warning: report.html not written ({type(exc).__name__}: {exc})")


@contextmanager
def _timed(timings: dict[str, float], status: RunStatus, name: str, log: Callable[[str], None]) -> Iterator[None]:
    """A stage of the run: recorded in the status, timed, and logged when it starts and when it completes."""
    status.stage(name)
    log(f"stage {name} started")
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 3)
    status.stage_done(name, timings[name])  # only a stage that completed
    log(f"stage {name} done in {timings[name]:.1f} s")
