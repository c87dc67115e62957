"""Run records: where a run stands, for ``mnist-dask status`` and ``mnist-dask runs``.

Every run keeps ``status.json`` in its folder (state, current stage, stage timings, the last
log lines, the error of a failed run). A submitted run also publishes the same record in
the scheduler's metadata under ``mnist-dask-runs/<run id>``, so a client that cannot see the
cluster's filesystem can still follow it; its tasks carry the span ``mnist-dask-run/<run id>``,
whose task counts give the progress of the stage in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from mnist_dask.data.defaults import DEFAULT_STORE
from mnist_dask.errors import ClusterLostError, JobsFailed, Terminated, UserError
from mnist_dask.jobs.run_lock import LOCK_NAME
from mnist_dask.locations import local_path

STATUS_FILE = "status.json"
# what a run leaves in its folder besides status.json; replaced only when a new run of the folder finishes
RESULT_FILE = "result.json"
REPORT_FILE = "report.html"
PREDICTIONS = "predictions.zarr"
RUN_OUTPUTS = (RESULT_FILE, REPORT_FILE, PREDICTIONS)
PENDING_OUTPUTS = ".pending"  # a run in progress writes its outputs here, in its folder; moved up once it finishes
STUDY_FILE = "study.json"  # a study's record in its folder
STUDY_JOB = "study"  # the job name in a submitted study's status.json
METADATA_KEY = "mnist-dask-runs"
SPAN_TAG = "mnist-dask-run"
LOG_LINES = 20  # log lines kept in the record
UNREADABLE = "unreadable"  # the state ``runs`` lists for a run folder whose status.json cannot be read
_DONE_STATES = ("memory", "released", "forgotten", "erred")
DEFAULT_STORE_NAME = Path(DEFAULT_STORE).name  # a store so named keeps plain runs/ and study/ beside it


def store_outputs(store_url: str, kind: Literal["runs", "study"]) -> Path:
    """A store's own default folder of ``kind`` (run folders, or a local study's outputs), so that two stores in
    one folder never share runs: ``runs``/``study`` beside a store named like the default one (``mnist.zarr``:
    storage/runs and storage/study for the default store), ``runs-<stem>``/``study-<stem>`` beside any other
    (storage/runs-fashion for storage/fashion.zarr); a URL store's go under storage/ of the current folder,
    named the same way."""
    path = local_path(store_url)
    name = store_url.rstrip("/").rsplit("/", 1)[-1] if path is None else os.path.basename(os.path.abspath(path))
    folder = f"{kind}-{Path(name).stem}" if name != DEFAULT_STORE_NAME and Path(name).stem else kind
    return Path(DEFAULT_STORE).parent / folder if path is None else path.parent / folder


def runs_root(store_url: str) -> Path:
    """Where a store's run folders go by default (:func:`store_outputs`: storage/runs for the default store)."""
    return store_outputs(store_url, "runs")


def study_root(store_url: str) -> Path:
    """Where a local study on a store writes by default (:func:`store_outputs`: storage/study for the default store)."""
    return store_outputs(store_url, "study")


def new_run_id(job_name: str) -> str:
    """A unique, sortable, readable run id: <job>-<YYYYmmdd-HHMMSS>-<4 hex digits>."""
    return f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class RunStatus:
    """The live record of one run, rewritten (atomically) on every change.

    ``client`` given: the record is also published in the scheduler's metadata.
    """

    def __init__(self, run_dir: Path, run_id: str, job: str, client: Any = None, **fields: Any) -> None:
        self.run_dir = Path(run_dir)
        self.client = client
        self.record: dict[str, Any] = {
            "run_id": run_id,
            "job": job,
            "run_dir": str(self.run_dir),
            "state": "queued",
            "stage": None,
            "stages": {},
            "log": [],
            **fields,
        }

    @classmethod
    def resume(cls, record: dict[str, Any], client: Any = None) -> RunStatus:
        """Carry on a record written elsewhere (the submitter's, for the driver on a worker)."""
        fields = {key: value for key, value in record.items() if key not in ("run_dir", "run_id", "job")}
        return cls(Path(record["run_dir"]), record["run_id"], record["job"], client=client, **fields)

    def queued(self, **fields: Any) -> None:
        """Submitted, not started yet."""
        self._write(state="queued", submitted=_now(), **fields)

    def running(self) -> None:
        """The driver has started (on this host, in this process); a note of an earlier driver's end (requeued) is
        history, no longer the run's state."""
        self._write(state="running", started=_now(), host=socket.gethostname(), pid=os.getpid(), note=None)

    def stage(self, name: str) -> None:
        """A stage begins."""
        self._write(stage=name)

    def stage_done(self, name: str, seconds: float) -> None:
        """A stage ended, after ``seconds``."""
        self._write(stages={**self.record["stages"], name: seconds})

    def log(self, line: str) -> None:
        """Keep a log line (the last LOG_LINES are kept)."""
        self._write(log=[*self.record["log"], line][-LOG_LINES:])

    def finished(self, result: dict[str, Any]) -> None:
        """The run ended with a result."""
        metrics = result.get("metrics", {})
        self._write(
            state="finished",
            finished=_now(),
            stage=None,
            test_accuracy=metrics.get("test_accuracy") if isinstance(metrics, dict) else None,
        )

    def failed(self, exc: BaseException) -> None:
        """The run ended with an error: its one-line message, and the stage it happened in.

        Ctrl-C is no error of the run's: it reads 'interrupted during STAGE', with no traceback
        (SIGTERM: 'terminated (SIGTERM) during STAGE').
        """
        tail: list[str] = []
        if isinstance(exc, KeyboardInterrupt):
            stage = self.record.get("stage")
            when = "after" if stage in self.record["stages"] else "during"  # a stage done, the next not begun
            ended = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            message = f"{ended} {when} {stage}" if stage else ended
        else:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if not isinstance(exc, (UserError, JobsFailed, ClusterLostError)):  # already one line for a person
                message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
                tail = traceback.format_exception(exc)[-3:]
        self._write(state="failed", finished=_now(), error=message, traceback_tail="".join(tail)[-2000:])

    def requeued(self, note: str) -> None:
        """A submitted run whose driver's worker went away: the scheduler starts the driver again (``note`` says so).
        The gone driver's start, host and process are no longer the run's: the next driver records its own."""
        self._write(state="queued", stage=None, note=note, started=None, host=None, pid=None)

    def _write(self, **fields: Any) -> None:
        self.record.update(fields)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_json(self.run_dir / STATUS_FILE, self.record)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.set_metadata([METADATA_KEY, self.record["run_id"]], self.record)


def check_own_folder(folder: Path, option: str, *markers: str) -> None:
    """Refuse an output folder that holds files but none of ours (``markers``, or ``status.json``).

    A run replaces its outputs in its folder (result.json, report.html, ...): it must never
    do that to a folder of the user's own files that a mistyped --run-dir pointed at.
    """
    folder = Path(folder)
    ours = [name for marker in (STATUS_FILE, *markers) for name in (marker, f"{marker}.part")]  # .part: cut short
    if not folder.is_dir() or any((folder / name).exists() for name in ours):
        return
    found = sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise UserError(
            f"{folder.absolute()}: holds other files ({found[0]}{more}) and no earlier run's; "
            f"pass a new or empty folder to {option}"
        )


def check_folder_kind(folder: Path, option: str, kind: Literal["run", "study"]) -> None:
    """Refuse a run folder that holds a study, or a study folder that holds a run (one line naming ``option``).

    Each writes its own files over the other's (status.json, report.html, ...), and ``runs``/``status`` would
    then show a record that is neither.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    other = "study" if kind == "run" else "run"
    if _holds(folder) == other:
        raise UserError(
            f"{folder.absolute()}: holds a {other} (its {STUDY_FILE if other == 'study' else STATUS_FILE}); "
            f"pass a new or empty folder, or a {kind}'s, to {option}"
        )


def _holds(folder: Path) -> Literal["run", "study"] | None:
    """What ``folder`` holds: a study (study.json, or a submitted study's status.json), a run (its outputs, or its
    status.json), or neither."""
    if any((folder / name).exists() for name in (STUDY_FILE, f"{STUDY_FILE}.part")):
        return "study"
    try:
        job = json.loads((folder / STATUS_FILE).read_text()).get("job")
    except (OSError, ValueError, AttributeError):  # none, unreadable, not an object: its outputs may still tell
        job = None
    if job == STUDY_JOB:
        return "study"
    if job is not None or any((folder / name).exists() for name in RUN_OUTPUTS):
        return "run"
    return None


def read_status(run_dir: Path) -> dict[str, Any]:
    """The record in a run folder; a user error when there is none, it is unreadable or it is not a run's."""
    path = Path(run_dir) / STATUS_FILE
    record = read_run_json(path, f"no such run status (is {run_dir} a run folder?)", "unreadable run status")
    missing = [key for key in ("run_id", "job", "state") if not isinstance(record.get(key), str)]
    if missing:
        raise UserError(f"{path}: not a run status (no {', '.join(missing)})")
    return record


def write_run_json(path: Path, value: dict[str, Any]) -> None:
    """Write a run folder's JSON file atomically: readers see the old file or the whole new one."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_text(json.dumps(value, indent=2) + "\n")
    except OSError as exc:  # a failed write (disk full) names no file: name it
        partial.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    partial.replace(path)


def read_result(run_dir: Path) -> dict[str, Any]:
    """A finished run's result.json, or a one-line UserError when the folder holds no finished run."""
    return read_run_json(
        Path(run_dir) / RESULT_FILE, f"no {RESULT_FILE} (not a finished run folder)", "cannot read the run's result"
    )


def read_run_json(path: Path, missing: str, unreadable: str) -> dict[str, Any]:
    """A JSON object file of a run folder; a one-line UserError naming the file when absent, unreadable
    or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {unreadable} ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: {unreadable} (it holds a JSON {_json_kind(value)}, not an object)")
    return value


def find_run_dir(ref: str, runs_root: Path) -> Path:
    """A run folder from a run id (looked up under runs_root) or a folder path."""
    for candidate in (Path(ref), Path(runs_root) / ref):
        if (candidate / STATUS_FILE).is_file():
            return candidate
    raise UserError(f"{ref}: no such run (neither a run folder nor a run id under {runs_root})")


def list_runs(runs_root: Path) -> list[dict[str, Any]]:
    """Every run record under runs_root, oldest first; a UserError when runs_root is not a folder.

    A folder whose status.json cannot be read (garbled, not readable, not a run's) is listed too, as a row in the
    state ``unreadable`` whose ``error`` says why (what ``status`` of that folder says), never left out unsaid.
    """
    root = Path(runs_root)
    if not root.is_dir():
        raise UserError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (of run folders)")
    records = []
    for path in sorted(root.glob(f"*/{STATUS_FILE}")):
        try:
            records.append(read_status(path.parent))
        except UserError as exc:
            records.append(unreadable_run(path.parent, str(exc).removeprefix(f"{path}: ")))
    return sorted(records, key=lambda r: str(r.get("submitted") or r.get("started") or ""))


def unreadable_run(run_dir: Path, reason: str) -> dict[str, Any]:
    """The row ``runs`` shows for a run folder whose status.json cannot be read: the folder's name, and why."""
    return {"run_id": Path(run_dir).name, "job": None, "state": UNREADABLE, "error": reason, "run_dir": str(run_dir)}


def scheduler_runs(client: Any) -> dict[str, dict[str, Any]]:
    """Run records published in the scheduler's metadata, by run id."""
    return client.get_metadata([METADATA_KEY], default={}) or {}


def stage_progress(client: Any, run_id: str) -> dict[str, Any] | None:
    """Task counts of the run's newest span on the scheduler ({'stage', 'done', 'total'}), if any."""
    return client.run_on_scheduler(_newest_span_progress, run_id=run_id)


def driver_alive(client: Any, key: str) -> bool:
    """True when the scheduler still holds the submitted driver task (queued or running)."""
    return client.run_on_scheduler(_task_known, key=key)


def run_state(record: dict[str, Any], driver_alive: bool | None = None) -> str:
    """Where a run stands: its recorded state, or 'lost' when its driver is known to be gone.

    Gone: a submitted run's driver task is no longer on the scheduler (``driver_alive`` False),
    or a running run's driver process on this host has exited (unless the scheduler still holds its driver task,
    ``driver_alive`` True: the scheduler starts a driver whose worker went away again on another worker).
    """
    state = str(record.get("state", "unknown"))
    if state not in ("queued", "running") or driver_alive is True:
        return state
    if driver_alive is False:
        return "lost"
    if state == "running" and record.get("host") == socket.gethostname() and record.get("pid"):
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return "lost"
        except (PermissionError, ValueError, OverflowError):
            pass
    return state


def with_state(record: dict[str, Any], driver_alive: bool | None = None) -> dict[str, Any]:
    """The record with its ``state`` decided by :func:`run_state`."""
    return {**record, "state": run_state(record, driver_alive)}


def submitted_driver_alive(client: Any, record: dict[str, Any]) -> bool | None:
    """Whether the scheduler still holds a submitted run's driver (None: not a submitted run)."""
    key = record.get("driver_key")
    return driver_alive(client, key) if isinstance(key, str) else None


def scheduler_record(client: Any, run: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A submitted run's record from the scheduler, with its state decided, and the stage's task progress.

    ``run`` is a run id or a run folder (its name is the id); (None, None) when the scheduler has no such run.
    """
    record = scheduler_runs(client).get(Path(run).name)
    if not isinstance(record, dict):
        return None, None
    return with_scheduler_state(client, record), stage_progress(client, record["run_id"])


def with_scheduler_state(client: Any, record: dict[str, Any]) -> dict[str, Any]:
    """A record read from the scheduler, with its state decided by whether its driver is still there.

    A driver that left the scheduler after the record was read may have finished meanwhile: its last
    write to the scheduler comes before its task ends, so the record is read again before 'lost'.
    A driver whose client was closed under it (its worker stopped or killed) could not publish its last record, but
    its run folder holds it (the driver writes the folder first, then the scheduler): where that folder is readable
    here, its record is the run's, as ``status FOLDER`` says.
    """
    alive = submitted_driver_alive(client, record)
    if alive is False:
        newer = scheduler_runs(client).get(str(record.get("run_id")))
        record = newer if isinstance(newer, dict) else record
    if record.get("state") in ("queued", "running"):
        record = _in_folder(record) or record
    return with_state(record, alive)


def _in_folder(record: dict[str, Any]) -> dict[str, Any] | None:
    """The same run's record in its run folder, when that folder is readable here (None otherwise)."""
    try:
        found = read_status(Path(str(record.get("run_dir"))))
    except UserError:  # not shared with this machine, or unreadable: the scheduler's record stands
        return None
    return found if found["run_id"] == record.get("run_id") else None


def _newest_span_progress(dask_scheduler: Any, run_id: str) -> dict[str, Any] | None:
    """(On the scheduler) the most recently started span under the run's root span."""
    extension = dask_scheduler.extensions.get("spans")
    if extension is None:
        return None
    prefix = (SPAN_TAG, run_id)
    spans = [s for s in extension.spans.values() if tuple(s.name[:2]) == prefix]
    if not spans:
        return None
    newest = max(spans, key=lambda s: (s.enqueued, len(s.name)))
    states = newest.states
    return {
        "stage": "/".join(newest.name[2:]) or None,
        "done": sum(states.get(state, 0) for state in _DONE_STATES),
        "total": sum(states.values()),
    }


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _task_known(dask_scheduler: Any, key: str) -> bool:
    return key in dask_scheduler.tasks


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
