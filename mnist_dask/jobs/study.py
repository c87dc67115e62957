"""The whole study in one go: every job on one cluster and one store, then one ledger of every published figure.

Jobs run one after another in a sensible order (the headline k-NN jobs first, the long
scikit-learn experiments after, the searches beyond the notebooks last), each in its run
folder in the store's own runs folder, under its own span on the dashboard. A job that fails is recorded
and the others go on. A job whose run folder already holds a finished result of the same job
(same parsed job file less its published figures) on the same store inputs is not run again unless
``force``; when its ``[expect]`` or ``[differs]`` changed since, the run is re-scored in its own folder
(result.json, report.html), so that the study and the run page it links to tell the same figures.
``study.json``, ``index.html`` and ``figures.md`` in the study folder gather the ledger of all
figures, per-job wall times and floors, and links to every run's report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, get_task_stream, span

from mnist_dask.cluster import killed_worker_error, lost_scheduler
from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source, parse_source
from mnist_dask.data.store import Store
from mnist_dask.errors import ClusterLostError, JobsFailed, UserError
from mnist_dask.jobs.driver import run_job, write_run_outputs
from mnist_dask.jobs.ledger import STATUSES, reproduced, scored
from mnist_dask.jobs.records import REPORT_FILE, RESULT_FILE, STUDY_FILE, RunStatus, read_run_json, write_run_json
from mnist_dask.jobs.run_lock import run_folder_lock
from mnist_dask.jobs.spec import Job, load_job

COST_FILE = "cost.json"  # in a run folder: the cluster cost of the study run that finished it
WALL_SECONDS = "wall_seconds"  # in cost.json: the job's wall time in the study that finished it
#: experiments in the order the study runs them; any other comes after, by name
ORDER = (
    "knn",
    "binary_5_detector",
    "zero_detector",
    "multilabel",
    "denoise",
    "small_sample",
    "error_analysis",
    "multiclass",
    "svm_kernels",
    "knn_best",
)


@dataclass(frozen=True)
class StudyJob:
    """One job of the study and where its run goes."""

    job: Job
    run_dir: Path


def study_jobs(paths: list[Path], runs_dir: Path) -> list[StudyJob]:
    """The named job files (all validated before anything runs), in the study's order, with their run folders."""
    jobs = [load_job(path) for path in paths]
    names = [job.name for job in jobs]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise UserError(f"two job files are named {duplicate!r}: each job needs its own run folder")
    jobs.sort(key=lambda job: (ORDER.index(job.experiment) if job.experiment in ORDER else len(ORDER), job.name))
    return [StudyJob(job, runs_dir / job.name) for job in jobs]


def run_study(
    jobs: list[StudyJob],
    store: Store,
    client: Client,
    study_dir: Path,
    source: Source | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """Run the study's jobs and write ``study.json`` + ``index.html`` in ``study_dir``; returns the study record.

    With ``status`` (a submitted study), the job in flight is its stage and each job's line goes to its log.
    """
    study_dir.mkdir(parents=True, exist_ok=True)
    if status is not None:
        status.running()
        log = _also_to(status, log)
    started = time.perf_counter()
    record: dict[str, Any] = {"store": store.url, "started": _now(), "jobs": []}
    if source is not None or not store.is_complete("raw"):
        outcome = ingest(source or parse_source(None), store, client)
        log(f"study: ingest {outcome.action}")
    inputs = (store.stage_attrs("raw") or {}).get("fingerprint")
    for number, item in enumerate(jobs, start=1):
        prefix = f"[{number}/{len(jobs)}] {item.job.name}"
        previous = None if force else _finished_result(item, store, inputs)
        if previous is not None:
            log(f"{prefix}: already finished with this job file and store; skipped (--force runs it again)")
            cost = _earlier_cost(item)  # of the result as the run left it, before a re-score rewrites it
            previous = _rescored(item, previous, store, _prefixed(log, prefix, item.job))
            record["jobs"].append({**_entry(item, "skipped", previous, None, 0.0), **cost})
            continue
        log(f"{prefix}: running")
        if status is not None:
            status.stage(item.job.name)
        job_started = time.perf_counter()
        try:
            with span("study", item.job.name), get_task_stream(client=client) as stream:
                result = run_job(item.job, store, client, item.run_dir, log=_prefixed(log, prefix, item.job))
        except (ClusterLostError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a failing job is reported; the others go on
            if lost_scheduler(client, exc):  # ... unless the cluster is gone: none of them could run
                raise
            seconds = time.perf_counter() - job_started
            told = killed_worker_error(client, exc) or exc  # its one line, not distributed's paragraph
            message = str(told).strip().splitlines()[0] if str(told).strip() else type(told).__name__
            log(f"{prefix}: FAILED after {seconds:.0f} s: {message}")
            record["jobs"].append(_entry(item, "failed", None, message, seconds))
            continue
        seconds = time.perf_counter() - job_started
        cost = _floor(stream.data, client)
        _keep_cost(item, cost, seconds)
        entry = {**_entry(item, "finished", result, None, seconds), **cost}
        log(f"{prefix}: finished in {seconds:.0f} s{_summary(entry)}")
        record["jobs"].append(entry)
        write_run_json(study_dir / STUDY_FILE, _summarised(record, started))  # an interrupted study keeps its times
    record = _summarised(record, started)
    record["finished"] = _now()
    write_run_json(study_dir / STUDY_FILE, record)
    from mnist_dask.report.study_page import write_study_page, write_study_summary

    write_study_page(record, study_dir)
    write_study_summary(record, study_dir)
    if status is not None:  # a submitted study: its record says whether every job ran, as the command's exit does
        failure = failed_jobs(record, study_dir)
        if failure is None:
            status.finished({"metrics": {}})
        else:
            status.failed(failure)
    return record


def failed_jobs(record: dict[str, Any], study_dir: Path) -> JobsFailed | None:
    """The study's failure, naming its failed jobs and where their errors are; None when none failed."""
    failed = record["failed"]
    if not failed:
        return None
    return JobsFailed(
        f"study: {len(failed)} of {counted(len(record['jobs']), 'job')} failed: {', '.join(failed)} "
        f"(their errors are in {Path(study_dir).absolute() / STUDY_FILE})"
    )


def counted(number: int, noun: str) -> str:
    """``1 job``, ``3 jobs``: a count with its noun in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _summarised(record: dict[str, Any], started: float) -> dict[str, Any]:
    """The study record so far with its totals: seconds, every figure, the ledger counts, the failed jobs."""
    jobs = [{key: value for key, value in entry.items() if key != "figures"} for entry in record["jobs"]]
    figures = [figure for entry in record["jobs"] for figure in entry["figures"]]
    return {
        **record,
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 1),
        "jobs_seconds": round(sum(_job_seconds(entry) for entry in record["jobs"]), 1),
        "figures": figures,
        "ledger": {status: sum(1 for f in figures if f["status"] == status) for status in STATUSES},
        "failed": [entry["job"] for entry in record["jobs"] if entry["state"] == "failed"],
    }


def _job_seconds(entry: dict[str, Any]) -> float:
    """A job's time in a study from scratch: a skipped job counts with its finished run's time."""
    return float(entry["run_seconds"] if entry["state"] == "skipped" else entry["seconds"])


def _finished_result(item: StudyJob, store: Store, inputs: Any) -> dict[str, Any] | None:
    """The run folder's result when it is a finished run of this very job on these store inputs.

    Only what the job computes counts: editing its [expect] or [differs] re-scores the run (:func:`_rescored`),
    it does not run it again.
    """
    path = item.run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = read_run_json(path, "no result", "unreadable result")
    except UserError:
        return None
    same = (
        result.get("job_fingerprint") == item.job.fingerprint
        and result.get("store") == store.url
        and result.get("inputs") == inputs
    )
    return result if same else None


def _rescored(item: StudyJob, result: dict[str, Any], store: Store, log: Callable[[str], None]) -> dict[str, Any]:
    """A skipped run's result scored against its job file as it is now; when that changed the figures, written
    back to the run's result.json and report.html (as the driver writes them) under the run folder's lock.

    Its cost.json follows the new result.json, so that later studies still show the run's cluster cost. A folder
    in use by a run keeps its outputs (that run replaces them), with a warning.
    """
    rescored = scored(item.job.expect, item.job.differs, result)
    if _as_written(rescored) == _as_written(result):
        return result
    try:
        with run_folder_lock(item.run_dir, item.job.name):
            old = (item.run_dir / RESULT_FILE).read_bytes()
            if _as_written(json.loads(old)) != _as_written(result):  # a run finished here since: its result stands
                log("warning: not re-scored in its run folder: a run replaced its result meanwhile")
                return result
            (item.run_dir / REPORT_FILE).unlink(missing_ok=True)  # a report that fails now must not leave the old one
            write_run_outputs(rescored, item.run_dir, store, log)
            _follow_cost(item, old)
    except UserError as exc:
        log(f"warning: not re-scored in its run folder: {exc}")
        return result
    log(f"published figures re-scored against {item.job.path}: {item.run_dir / RESULT_FILE} and its report updated")
    return rescored


def _as_written(result: dict[str, Any]) -> str:
    """A result as JSON with sorted keys, to compare two (NaN equals NaN there, unlike in the dicts)."""
    return json.dumps(result, sort_keys=True)


def _follow_cost(item: StudyJob, old: bytes) -> None:
    """Point the run's cost.json at its rewritten result.json, when it belonged to the result it replaced."""
    try:
        cost = read_run_json(item.run_dir / COST_FILE, "no cost", "unreadable cost")
    except UserError:
        return
    if cost.get("result_sha256") == hashlib.sha256(old).hexdigest():
        new = (item.run_dir / RESULT_FILE).read_bytes()
        write_run_json(item.run_dir / COST_FILE, {**cost, "result_sha256": hashlib.sha256(new).hexdigest()})


def _entry(
    item: StudyJob, state: str, result: dict[str, Any] | None, error: str | None, seconds: float
) -> dict[str, Any]:
    """One job's line of the study: state, times, its figures, where its report is."""
    result = result or {}
    # the job file's figures and reasons as they are now (a skipped run may predate an edit of them);
    # a failed job's figures all count as missing, so a broken study never reads as a clean table
    expected = scored(item.job.expect, item.job.differs, result).get("expected", {})  # as result.json holds it
    figures = [{"job": item.job.name, "key": key, **value} for key, value in expected.items()]
    report = item.run_dir / REPORT_FILE
    return {
        "job": item.job.name,
        "job_file": item.job.path,
        "experiment": item.job.experiment,
        "state": state,
        "seconds": round(seconds, 1),
        "run_seconds": round(sum(result.get("timings_s", {}).get(k, 0.0) for k in ("ingest", item.job.experiment)), 1),
        "run_dir": str(item.run_dir),
        "report": str(report) if report.is_file() else None,
        "test_accuracy": (result.get("metrics") or {}).get("test_accuracy"),
        "ledger": {status: sum(1 for f in figures if f["status"] == status) for status in STATUSES},
        "error": error,
        "figures": figures,
    }


def _floor(stream: list[dict[str, Any]], client: Client) -> dict[str, Any]:
    """What the job's cluster tasks cost: their compute seconds summed, the longest, and the job's floor.

    The floor is the wall time the job could not beat on these workers: the longest task, or all
    task seconds spread evenly over the workers, whichever is larger (work done on the client and
    waiting between tasks come on top).
    """
    computes = [
        sum(part["stop"] - part["start"] for part in task.get("startstops", ()) if part.get("action") == "compute")
        for task in stream
    ]
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    total, longest = float(sum(computes)), float(max(computes, default=0.0))
    return {
        "tasks": len(computes),
        "task_seconds": round(total, 1),
        "longest_task_seconds": round(longest, 1),
        "workers": workers,
        "floor_seconds": round(max(longest, total / workers), 1),
    }


def _keep_cost(item: StudyJob, cost: dict[str, Any], seconds: float) -> None:
    """Keep the job's cluster cost and wall time beside its result, so that a later study that skips the job
    still shows them (the same wall time as the study that ran it, not only its stages' share)."""
    result = (item.run_dir / RESULT_FILE).read_bytes()
    kept = {**cost, WALL_SECONDS: round(seconds, 1), "result_sha256": hashlib.sha256(result).hexdigest()}
    write_run_json(item.run_dir / COST_FILE, kept)


def _earlier_cost(item: StudyJob) -> dict[str, Any]:
    """The cluster cost kept with the finished run being skipped; nothing when it is missing or for another result."""
    try:
        cost = read_run_json(item.run_dir / COST_FILE, "no cost", "unreadable cost")
        result = (item.run_dir / RESULT_FILE).read_bytes()
    except (UserError, OSError):
        return {}
    if cost.pop("result_sha256", None) != hashlib.sha256(result).hexdigest():
        return {}
    wall = cost.pop(WALL_SECONDS, None)
    return {**cost, "run_seconds": wall} if isinstance(wall, (int, float)) else cost


def _summary(entry: dict[str, Any]) -> str:
    """', test accuracy 0.9688, figures 1/1 as published' for the terminal."""
    parts = []
    if isinstance(entry.get("test_accuracy"), float):
        parts.append(f"test accuracy {entry['test_accuracy']:.4f}")
    total = sum(entry["ledger"].values())
    if total:
        parts.append(f"figures {reproduced(entry['ledger'])}/{total} as published")
    return (", " + ", ".join(parts)) if parts else ""


def _also_to(status: RunStatus, log: Callable[[str], None]) -> Callable[[str], None]:
    """A logger that keeps each line in the study's run record too."""

    def both(line: str) -> None:
        status.log(line)
        log(line)

    return both


def _prefixed(log: Callable[[str], None], prefix: str, job: Job) -> Callable[[str], None]:
    """A logger that puts the job's number and name before each line. An experiment starts its own
    lines with its name: for a job of the same name, that start goes, so the name is said once."""
    same = f"{job.name}: " if job.name == job.experiment else None
    return lambda line: log(f"{prefix}: {line.removeprefix(same) if same else line}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
