"""submit / status / runs against a real ``dask scheduler`` and two ``dask worker`` processes.

The submitting process exits at once; the job's driver runs on a worker, and the run is
followed with ``status`` (from the run folder, and from the scheduler) and ``runs``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import TINY_KNN_JOB, printed_follow_command

from mnist_dask.jobs.records import RunStatus, run_state

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=timeout)


def _status(run_id: str, *options: str) -> dict:
    done = _cli("status", run_id, "--json", *options)
    assert done.stderr == "", done.stderr
    record = json.loads(done.stdout)
    assert done.returncode == (1 if record["state"] in ("failed", "lost") else 0), record  # how it ended
    return record


def _follow(run_id: str, store: str, scheduler: str, timeout: float = 400) -> list[dict]:
    """Poll status (alternately from the folder and from the scheduler) until the run ends."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        options = ("--store", store) if len(seen) % 2 == 0 else ("--scheduler", scheduler)
        seen.append(_status(run_id, *options))
        if seen[-1]["state"] not in ("queued", "running"):
            return seen
        assert time.monotonic() < deadline, f"run still {seen[-1]['state']} after {timeout} s: {seen[-1]}"
        time.sleep(0.5)


def test_submitted_job_runs_on_the_cluster_and_is_followed_with_status_and_runs(dask_processes, mnist_dir, tmp_path):
    store = str(tmp_path / "store" / "mnist.zarr")
    submitted = _cli(
        "submit",
        str(REPO / "jobs" / "knn_downscaled.toml"),
        "--scheduler",
        dask_processes.address,
        "--store",
        store,
        "--source",
        f"idx:{mnist_dir}",
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]  # the run id is the last line
    assert run_id.startswith("knn_downscaled-")
    assert "mnist-dask status" in submitted.stderr

    seen = _follow(run_id, store, dask_processes.address)

    # the submitter had exited before the job got anywhere: ingest, downscale, predict, sweep came later
    final = seen[-1]
    assert final["state"] == "finished", final
    assert seen[0]["state"] in ("queued", "running") and "predict" not in seen[0]["stages"]
    assert any(record["state"] == "running" and record.get("stage") for record in seen)
    assert final["test_accuracy"] == pytest.approx(0.9676, abs=5e-5)  # the notebook's figure, computed remotely
    assert set(final["stages"]) >= {"ingest", "transform downscale", "predict", "sweep"}
    assert final["pid"] != os.getpid() and final["driver_key"].endswith(run_id)
    run_dir = Path(final["run_dir"])
    assert run_dir == tmp_path / "store" / "runs" / run_id  # runs/ beside the local store
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"]["test_accuracy"] == final["test_accuracy"]
    assert (run_dir / "report.html").exists()

    text = _cli("status", run_id, "--store", store)
    assert text.returncode == 0 and "finished" in text.stdout and "test accuracy: 0.9676" in text.stdout

    listed = _cli("runs", "--store", store)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    assert "finished" in line and "0.9676" in line
    (tmp_path / "elsewhere").mkdir()  # an empty folder of runs: only the scheduler's records
    from_scheduler = json.loads(
        _cli("runs", "--scheduler", dask_processes.address, "--json", "--runs-dir", str(tmp_path / "elsewhere")).stdout
    )
    assert [r["state"] for r in from_scheduler if r["run_id"] == run_id] == ["finished"]


def test_a_job_failing_on_the_cluster_reports_its_error(dask_processes, small, tmp_path):
    train, test = small.write_csv(tmp_path / "csv")
    lines = train.read_text().splitlines()
    lines[3] = lines[3].replace(",", ",x", 1)  # a non-numeric pixel, found by the parser on a worker
    train.write_text("\n".join(lines) + "\n")
    store = str(tmp_path / "store" / "mnist.zarr")

    submitted = _cli(
        "submit",
        str(REPO / "jobs" / "knn_baseline.toml"),
        "--scheduler",
        dask_processes.address,
        "--store",
        store,
        "--source",
        f"csv:{train},{test}",
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]

    final = _follow(run_id, store, dask_processes.address)[-1]

    assert final["state"] == "failed"
    assert final["error"].startswith(f"{train}: non-integer value")
    assert final["stage"] == "ingest"
    text = _cli("status", run_id, "--scheduler", dask_processes.address)
    assert text.returncode == 1 and "failed" in text.stdout and f"error: {final['error']}" in text.stdout
    assert not (Path(final["run_dir"]) / "result.json").exists()


def test_the_command_submit_prints_follows_a_run_on_another_store_as_printed(dask_processes, small, tmp_path):
    """Not on the default store, nor in the folder it was submitted from: the printed command still finds the run."""
    store = str(tmp_path / "elsewhere" / "mnist.zarr")
    job = tmp_path / "tiny.toml"
    job.write_text(TINY_KNN_JOB)
    idx = small.write_idx(tmp_path / "idx")
    submitted = _cli(
        "submit", str(job), "--scheduler", dask_processes.address, "--store", store, "--source", f"idx:{idx}"
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]
    (tmp_path / "another").mkdir()

    deadline = time.monotonic() + 300
    while True:
        shown = subprocess.run(
            printed_follow_command(submitted.stderr), capture_output=True, text=True, cwd=tmp_path / "another"
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"run {run_id} (job tiny): "), shown.stdout
        if "finished" in shown.stdout.splitlines()[0]:
            break
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(0.5)


def test_submit_without_a_scheduler_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_dask",
            "submit",
            str(REPO / "jobs" / "knn_baseline.toml"),
            "--store",
            str(tmp_path / "s.zarr"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--scheduler" in done.stderr


def test_unknown_run_is_a_one_line_error(tmp_path):
    done = _cli("status", "no-such-run", "--runs-dir", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no-such-run" in done.stderr


def test_a_running_record_whose_process_is_gone_is_lost(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    status = RunStatus(tmp_path / "run-1", "run-1", "knn_baseline")
    status.running()
    assert run_state(status.record) == "running"  # this process is alive
    status._write(pid=child.pid)  # as if the run's process had been killed

    listed = _cli("runs", "--runs-dir", str(tmp_path))
    shown = _cli("status", "run-1", "--runs-dir", str(tmp_path))

    assert run_state(status.record) == "lost"
    assert listed.returncode == 0 and "lost" in listed.stdout.splitlines()[1]
    assert shown.returncode == 1 and "lost" in shown.stdout and "the job again to resume" in shown.stdout


def test_a_driver_that_finished_after_its_record_was_read_is_not_called_lost(dask_processes):
    """status reads the record, then asks whether the driver is still there: a driver that finished in
    between has written 'finished' before leaving the scheduler, and that is what status must say."""
    from distributed import Client

    from mnist_dask.jobs.records import METADATA_KEY, with_scheduler_state

    read_earlier = {"run_id": "r-1", "job": "knn_baseline", "state": "running", "driver_key": "driver-r-1-gone"}
    with Client(dask_processes.address) as client:
        client.set_metadata([METADATA_KEY, "r-1"], {**read_earlier, "state": "finished"})  # its last write
        assert with_scheduler_state(client, read_earlier)["state"] == "finished"
        client.set_metadata([METADATA_KEY, "r-1"], read_earlier)  # a driver that died without a word
        assert with_scheduler_state(client, read_earlier)["state"] == "lost"


def _submitted_and_running(scheduler: str, store: str, idx: Path) -> tuple[str, Path]:
    """Submit knn_baseline on the store (ingesting ``idx``) and wait until its driver runs; its id and record file."""
    job = str(REPO / "jobs" / "knn_baseline.toml")
    submitted = _cli("submit", job, "--scheduler", scheduler, "--store", store, "--source", f"idx:{idx}")
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]
    record_file = Path(store).parent / "runs" / run_id / "status.json"
    deadline = time.monotonic() + 120
    while not record_file.is_file() or json.loads(record_file.read_text())["state"] != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    return run_id, record_file


def test_a_submitted_run_whose_workers_are_stopped_is_queued_again_and_resumes_on_a_new_worker(small, tmp_path):
    """'dask worker' stopped (SIGTERM) under a running driver: the scheduler keeps the driver task and starts it again
    on the next worker, so both views say queued again (naming the worker), not failed nor a lost scheduler."""
    from support import DaskProcesses, SmallMnist

    idx = SmallMnist(n_train=10000, n_test=2000).write_idx(tmp_path / "idx")  # a run of seconds: time to stop it
    store = str(tmp_path / "store" / "mnist.zarr")
    cluster = DaskProcesses(n_workers=2)
    rejoined = None
    try:
        run_id, _ = _submitted_and_running(cluster.address, store, idx)
        cluster.workers.send_signal(signal.SIGTERM)
        cluster.workers.wait(60)

        views = [_status(run_id, "--store", store), _status(run_id, "--scheduler", cluster.address)]
        for record in views:
            assert record["state"] == "queued", record
            assert record["note"].startswith("the worker tcp://127.0.0.1:"), record
            assert "running the run's driver was stopped or killed during " in record["note"], record
            assert "the scheduler starts the driver again on the next free worker" in record["note"], record
            assert record["started"] is None and record["pid"] is None, record  # the gone driver's, not the run's
        shown = _cli("status", run_id, "--scheduler", cluster.address)
        assert shown.returncode == 0 and f"  note: {views[0]['note']}" in shown.stdout.splitlines(), shown.stdout
        assert "  started: " not in shown.stdout, shown.stdout  # a queued run has not started

        dask = str(Path(sys.executable).with_name("dask"))
        rejoined = subprocess.Popen(
            [dask, "worker", cluster.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        final = _follow(run_id, store, cluster.address)[-1]
        assert final["state"] == "finished", final  # the same run, resumed by the scheduler
        assert final["note"] is None, final  # the stopped worker's note ended when the new driver started
        assert (Path(final["run_dir"]) / "result.json").is_file()
    finally:
        if rejoined is not None:
            rejoined.terminate()
            rejoined.wait(30)
        cluster.close()


def test_a_submitted_run_whose_driver_task_the_scheduler_gave_up_is_lost_in_both_views(small, tmp_path, monkeypatch):
    """The driver's worker process killed (SIGKILL) on a scheduler allowing no failures: the scheduler gives the
    driver task up (erred) and forgets it (no client but fire-and-forget wants it). Both views say lost (exit 1),
    never a run 'running' or 'queued' forever."""
    from support import DaskProcesses, SmallMnist

    idx = SmallMnist(n_train=10000, n_test=2000).write_idx(tmp_path / "idx")  # a run of seconds: time to kill it
    store = str(tmp_path / "store" / "mnist.zarr")
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")  # the scheduler's (and workers') config
    cluster = DaskProcesses(n_workers=2)
    try:
        run_id, record_file = _submitted_and_running(cluster.address, store, idx)
        os.kill(json.loads(record_file.read_text())["pid"], signal.SIGKILL)  # the worker process running the driver

        deadline = time.monotonic() + 60
        while (seen := _status(run_id, "--scheduler", cluster.address))["state"] != "lost":
            assert seen["state"] == "running" and time.monotonic() < deadline, seen  # never queued: it is given up
            time.sleep(0.5)
        assert _status(run_id, "--store", store)["state"] == "lost"
    finally:
        cluster.close()


def test_a_submitted_run_whose_scheduler_is_stopped_fails_naming_it_and_is_never_queued_again(small, tmp_path):
    """Ctrl-C on 'dask scheduler' under a submitted run: the scheduler tells its workers to close, and they close their
    clients as a stopped worker does, but nothing will start the driver again; the run folder's record says failed,
    naming the scheduler (exit 1), not queued for good."""
    from support import DaskProcesses, SmallMnist

    idx = SmallMnist(n_train=10000, n_test=2000).write_idx(tmp_path / "idx")  # a run of seconds: time to kill it
    store = str(tmp_path / "store" / "mnist.zarr")
    cluster = DaskProcesses(n_workers=2)
    try:
        run_id, record_file = _submitted_and_running(cluster.address, store, idx)
        cluster.scheduler.send_signal(signal.SIGINT)
        cluster.scheduler.wait(60)
        deadline = time.monotonic() + 60
        while (record := json.loads(record_file.read_text()))["state"] == "running":  # until the driver records
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
    finally:
        cluster.close()
    assert record["state"] == "failed", record
    assert record["error"].startswith(f"lost the connection to the Dask scheduler {cluster.address} during "), record
    assert _status(run_id, "--store", store)["state"] == "failed"
