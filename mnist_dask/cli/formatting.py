"""The human text of run records and results: ``status``'s report, ``runs``' table, ``run``'s last line."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from mnist_dask.jobs.ledger import MET, STATUSES, reproduced
from mnist_dask.jobs.records import STUDY_JOB, UNREADABLE

LOST_HINT = (
    "the run's driver is gone (its process or worker died); completed stages are kept in the "
    "store: run or submit the job again to resume"
)
_SUBMITTED_LOST = (
    "the {whose} driver process is gone (its worker died): if the scheduler still holds the driver task it starts "
    "it again on another worker ('status --scheduler' tells); if not, {then}"
)
SUBMITTED_LOST_HINT = _SUBMITTED_LOST.format(
    whose="run's", then="submit the job again to resume from the stages kept in the store"
)
SUBMITTED_STUDY_LOST_HINT = _SUBMITTED_LOST.format(
    whose="study's",
    then="submit the study again: its finished jobs are skipped and the others resume from the stages kept in the "
    "store",
)


def describe_run(record: dict[str, Any], progress: dict[str, Any] | None = None, from_scheduler: bool = False) -> str:
    """Several lines about one run (its ``state`` already decided) for a person.

    ``from_scheduler``: the state was decided by asking the scheduler whether it still holds the run's driver.
    """
    lines = [f"run {record['run_id']} (job {record.get('job')}): {record['state']}"]
    for key in ("submitted", "started", "finished"):
        if record.get(key):
            lines.append(f"  {key}: {record[key]}")
    if record["state"] in ("queued", "running") and record.get("stage"):
        detail = ""
        if progress and progress.get("total"):
            where = "" if progress.get("stage") in (None, record["stage"]) else f" of {progress['stage']}"
            detail = f" ({progress['done']}/{progress['total']} tasks done{where})"
        lines.append(f"  stage: {record['stage']}{detail}")
    stages = record.get("stages")
    if isinstance(stages, dict) and stages:
        lines.append("  stages: " + ", ".join(f"{name} {_seconds(took)}" for name, took in stages.items()))
    if record["state"] == "failed":
        lines.append(f"  error: {record.get('error')}")
    if record["state"] == "lost":
        submitted = bool(record.get("driver_key")) and not from_scheduler  # its pid gone; the scheduler not asked
        lines.append(f"  {_lost_hint(submitted, record.get('job') == STUDY_JOB)}")
    if record["state"] in ("queued", "running") and record.get("note"):
        lines.append(f"  note: {record['note']}")
    if record["state"] == "finished" and isinstance(record.get("test_accuracy"), (int, float)):
        lines.append(f"  test accuracy: {record['test_accuracy']:.4f}")
    if record.get("run_dir"):
        lines.append(f"  folder: {record['run_dir']}")
    if isinstance(record.get("log"), list) and record["log"]:
        lines.append(f"  last log line: {record['log'][-1]}")
    return "\n".join(lines)


def _lost_hint(submitted: bool, study: bool) -> str:
    """What to do about a lost run: a submitted one may be started again by its scheduler; a study is submitted
    again as a study (a job's own record says to run or submit the job)."""
    if not submitted:
        return LOST_HINT
    return SUBMITTED_STUDY_LOST_HINT if study else SUBMITTED_LOST_HINT


def follow_command(folder: Path) -> str:
    """The command that follows a submitted run, as it can be pasted: ``status`` of its absolute folder.

    The folder names the run whatever --store, --runs-dir or current folder the submitter had.
    """
    return f"mnist-dask status {shlex.quote(str(Path(folder).absolute()))}"


def runs_table(records: list[dict[str, Any]]) -> str:
    """One line per run (state already decided): id, state, start, and the stage, accuracy or error."""
    lines = [f"{'RUN':44s} {'STATE':10s} {'STARTED':19s} {'STAGE / RESULT'}"]
    for record in records:
        started = str(record.get("started") or record.get("submitted") or "")[:19].replace("T", " ")
        lines.append(f"{record['run_id']:44s} {record['state']:10s} {started:19s} {outcome(record)}")
    return "\n".join(lines)


def outcome(record: dict[str, Any]) -> str:
    """One short cell: the stage in flight, the accuracy, or the error."""
    if record["state"] in ("failed", UNREADABLE):
        return f"error: {record.get('error', '')}"[:80]
    if record["state"] == "finished":
        accuracy = record.get("test_accuracy")
        return f"test accuracy {accuracy:.4f}" if isinstance(accuracy, (int, float)) else "done"
    return str(record.get("stage") or "")


def headline(result: dict[str, Any]) -> str:
    """One line summarising a run: its test accuracy (and model) when it has one."""
    metrics = result.get("metrics", {})
    figures = _figures(result.get("ledger"))
    if "test_accuracy" not in metrics:
        return f"done{figures}"
    model = result.get("model", {})
    described = f" (model {model['n_neighbors']}-NN {model['weights']})" if "n_neighbors" in model else ""
    return f"test accuracy {metrics['test_accuracy']:.4f}{described}{figures}"


def _figures(ledger: dict[str, int] | None) -> str:
    """``; published figures: 3 of 4 reproduced (1 missing)`` from a run's ledger counts; empty without one."""
    if not ledger:
        return ""
    met = reproduced(ledger)
    others = [f"{ledger[status]} {status}" for status in STATUSES if status not in MET and ledger.get(status)]
    return f"; published figures: {met} of {sum(ledger.values())} reproduced" + (
        f" ({', '.join(others)})" if others else ""
    )


def rows(counts: dict[str, int]) -> str:
    """``train 60,000, test 10,000``."""
    return ", ".join(f"{split} {n:,}" for split, n in counts.items())


def _seconds(value: Any) -> str:
    """A recorded duration as ``12.3 s`` (as is, when it is not a number)."""
    return f"{value:.1f} s" if isinstance(value, (int, float)) else str(value)
