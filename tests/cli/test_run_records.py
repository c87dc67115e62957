"""``status`` and ``runs`` over run folders as runs leave them (records written by :class:`RunStatus`): how a run
ended is in ``status``'s exit status, and ``runs`` lists every folder, an unreadable record too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_dask.errors import UserError
from mnist_dask.jobs.records import STATUS_FILE, STUDY_JOB, RunStatus


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _runs(root: Path) -> dict[str, RunStatus]:
    """Four run folders under ``root``, one in each state a run can be left in."""
    made = {state: RunStatus(root / f"run-{state}", f"run-{state}", "knn_baseline") for state in ("finished", "failed")}
    made["finished"].running()
    made["finished"].finished({"metrics": {"test_accuracy": 0.9691}})
    made["failed"].running()
    made["failed"].stage("predict")
    made["failed"].failed(UserError("train.csv: non-integer value"))
    made["running"] = RunStatus(root / "run-running", "run-running", "knn_baseline")
    made["running"].running()  # this process: alive
    made["lost"] = RunStatus(root / "run-lost", "run-lost", "knn_baseline")
    made["lost"].running()
    made["lost"]._write(pid=_dead_pid())  # as if its process had been killed
    return made


@pytest.mark.parametrize("as_json", [False, True])
def test_status_exits_1_for_a_failed_or_lost_run_and_0_for_one_finished_or_running(tmp_path, as_json):
    """A script that waited for a run to end tells how it ended from ``status``'s exit status."""
    _runs(tmp_path)
    for state, expected in (("finished", 0), ("running", 0), ("failed", 1), ("lost", 1)):
        shown = _cli("status", f"run-{state}", "--runs-dir", tmp_path, *(["--json"] if as_json else []))
        assert shown.returncode == expected, (state, shown.stdout, shown.stderr)
        assert shown.stderr == ""  # the state and error are the output, not an error of the command's
        if as_json:
            assert json.loads(shown.stdout)["state"] == state
        else:
            assert shown.stdout.startswith(f"run run-{state} (job knn_baseline): {state}\n"), shown.stdout
    failed = _cli("status", "run-failed", "--runs-dir", tmp_path).stdout
    assert "  error: train.csv: non-integer value" in failed.splitlines()


def test_runs_lists_a_folder_whose_status_cannot_be_read_with_why_beside_the_others(tmp_path):
    """A garbled (or unreadable) status.json is one row saying so, as ``status`` of that folder would: not left out."""
    _runs(tmp_path)
    garbled = tmp_path / "run-garbled"
    garbled.mkdir()
    (garbled / STATUS_FILE).write_text('{"run_id": "run-garbled", "state": ')  # cut short by a full disk
    broken = {"run-garbled": "unreadable run status (Expecting value"}
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "run-locked"
        RunStatus(locked, "run-locked", "knn_baseline").running()
        (locked / STATUS_FILE).chmod(0)
        broken["run-locked"] = "unreadable run status ([Errno 13] Permission denied"

    listed = _cli("runs", "--runs-dir", tmp_path)
    as_json = _cli("runs", "--runs-dir", tmp_path, "--json")

    assert listed.returncode == 0 and as_json.returncode == 0, listed.stderr + as_json.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert sorted(rows) == sorted(["run-finished", "run-failed", "run-running", "run-lost", *broken]), listed.stdout
    records = {record["run_id"]: record for record in json.loads(as_json.stdout)}
    for run_id, reason in broken.items():
        assert rows[run_id].split()[1] == "unreadable" and f"error: {reason}" in rows[run_id], rows[run_id]
        assert records[run_id]["state"] == "unreadable" and records[run_id]["error"].startswith(reason)
        assert records[run_id]["run_dir"] == str(tmp_path / run_id)
        shown = _cli("status", tmp_path / run_id)  # the same reason, as a user error naming the file
        assert shown.returncode == 2 and reason in shown.stderr and str(tmp_path / run_id / STATUS_FILE) in shown.stderr
    assert "0.9691" in rows["run-finished"] and rows["run-lost"].split()[1] == "lost"


def test_status_of_a_lost_submitted_study_says_to_submit_the_study_again(tmp_path):
    """A submitted study whose driver's process is gone: the hint names the study, not a job, as what to submit."""
    for job in ("knn_baseline", STUDY_JOB):
        record = RunStatus(tmp_path / job, job, job, driver_key=f"driver-{job}", scheduler="tcp://127.0.0.1:1")
        record.running()
        record._write(pid=_dead_pid())  # its driver's process killed with its worker
    job_hint = _cli("status", "knn_baseline", "--runs-dir", tmp_path)
    study_hint = _cli("status", STUDY_JOB, "--runs-dir", tmp_path)
    assert (job_hint.returncode, study_hint.returncode) == (1, 1), job_hint.stderr + study_hint.stderr
    assert "lost" in job_hint.stdout.splitlines()[0] and "lost" in study_hint.stdout.splitlines()[0]
    assert "submit the job again" in job_hint.stdout and "study" not in job_hint.stdout
    assert "submit the study again: its finished jobs are skipped" in study_hint.stdout
    assert "submit the job again" not in study_hint.stdout
