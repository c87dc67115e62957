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
from typing import Any

from mnist_dask.errors import UserError

STATUS_FILE = "status.json"
METADATA_KEY = "mnist-dask-runs"
SPAN_TAG = "mnist-dask-run"
LOG_LINES = 20  # log lines kept in the record
_DONE_STATES = ("memory", "released", "forgotten", "erred")


def runs_root(store_url: str) -> Path:
    """Where run folders go by default: 'runs' beside a local store (storage/runs for the default
    store), else storage/runs under the current folder."""
    if "://" in store_url and not store_url.startswith("file://"):
        return Path("storage/runs")
    return Path(store_url.removeprefix("file://")).parent / "runs"


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
        """The driver has started (on this host, in this process)."""
        self._write(state="running", started=_now(), host=socket.gethostname(), pid=os.getpid())

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
        """The run ended with an error: its one-line message, and the stage it happened in."""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, UserError):
            message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        tail = traceback.format_exception(exc)[-3:] if not isinstance(exc, UserError) else []
        self._write(state="failed", finished=_now(), error=message, traceback_tail="".join(tail)[-2000:])

    def _write(self, **fields: Any) -> None:
        self.record.update(fields)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_json(self.run_dir / STATUS_FILE, self.record)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.set_metadata([METADATA_KEY, self.record["run_id"]], self.record)


def read_status(run_dir: Path) -> dict[str, Any]:
    """The record in a run folder; a user error when there is none or it is unreadable."""
    return read_run_json(
        Path(run_dir) / STATUS_FILE, f"no such run status (is {run_dir} a run folder?)", "unreadable run status"
    )


def write_run_json(path: Path, value: dict[str, Any]) -> None:
    """Write a run folder's JSON file atomically: readers see the old file or the whole new one."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)


def read_result(run_dir: Path) -> dict[str, Any]:
    """A finished run's result.json, or a one-line UserError when the folder holds no finished run."""
    return read_run_json(
        Path(run_dir) / "result.json", "no result.json (not a finished run folder)", "cannot read the run's result"
    )


def read_run_json(path: Path, missing: str, unreadable: str) -> dict[str, Any]:
    """A JSON file of a run folder; a one-line UserError naming the file when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {unreadable} ({exc})") from None


def find_run_dir(ref: str, runs_root: Path) -> Path:
    """A run folder from a run id (looked up under runs_root) or a folder path."""
    for candidate in (Path(ref), Path(runs_root) / ref):
        if (candidate / STATUS_FILE).is_file():
            return candidate
    raise UserError(f"{ref}: no such run (neither a run folder nor a run id under {runs_root})")


def list_runs(runs_root: Path) -> list[dict[str, Any]]:
    """Every run record under runs_root, oldest first."""
    records = []
    for path in sorted(Path(runs_root).glob(f"*/{STATUS_FILE}")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a half-copied folder is not a run
    return sorted(records, key=lambda r: r.get("submitted") or r.get("started") or "")


def scheduler_runs(client: Any) -> dict[str, dict[str, Any]]:
    """Run records published in the scheduler's metadata, by run id."""
    return client.get_metadata([METADATA_KEY], default={}) or {}


def stage_progress(client: Any, run_id: str) -> dict[str, Any] | None:
    """Task counts of the run's newest span on the scheduler ({'stage', 'done', 'total'}), if any."""
    return client.run_on_scheduler(_newest_span_progress, run_id=run_id)


def driver_alive(client: Any, key: str) -> bool:
    """True when the scheduler still holds the submitted driver task (queued or running)."""
    return client.run_on_scheduler(_task_known, key=key)


def liveness(record: dict[str, Any]) -> str:
    """The record's state, or 'lost' when a local driver process of a running run is gone."""
    state = record.get("state", "unknown")
    if state == "running" and record.get("host") == socket.gethostname() and record.get("pid"):
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return "lost"
        except PermissionError:
            pass
    return state


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


def _task_known(dask_scheduler: Any, key: str) -> bool:
    return key in dask_scheduler.tasks


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
