"""What clusters do to jobs: a worker dies, the scheduler dies, three jobs share one cluster and store.

All on real ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1, through the CLI.
(A driver killed mid-transform is tests/test_derive.py's kill-and-resume test.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from support import DaskProcesses

from mnist_dask.data.store import Store
from mnist_dask.jobs.records import PENDING_OUTPUTS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory, dask_processes, mnist_dir) -> str:
    path = str(tmp_path_factory.mktemp("failures") / "mnist.zarr")
    done = _cli("ingest", "--source", f"idx:{mnist_dir}", "--store", path, "--scheduler", dask_processes.address)
    assert done.returncode == 0, done.stderr
    return path


def _command(job: str, store: str, run_dir: Path, scheduler: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mnist_dask",
        "run",
        str(REPO / "jobs" / f"{job}.toml"),
        "--store",
        store,
        "--run-dir",
        str(run_dir),
        "--scheduler",
        scheduler,
    ]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=600)


def _wait_for_predict(driver: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    """Block until the driver has started the predict stage (its Zarr output exists, among the pending outputs)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / PENDING_OUTPUTS / "predictions.zarr" / "proba" / "zarr.json").exists():
        assert driver.poll() is None, driver.communicate()[1]
        assert time.monotonic() < deadline, "predict stage never started"
        time.sleep(0.1)


def _predictions(run_dir: Path) -> np.ndarray:
    return zarr.open_group(str(run_dir / "predictions.zarr"), mode="r")["predicted"][:]


def test_worker_killed_mid_predict_gives_identical_predictions(dask_processes, store, tmp_path):
    undisturbed = subprocess.run(
        _command("knn_baseline", store, tmp_path / "calm", dask_processes.address),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert undisturbed.returncode == 0, undisturbed.stderr

    driver = subprocess.Popen(
        _command("knn_baseline", store, tmp_path / "storm", dask_processes.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_predict(driver, tmp_path / "storm")
    time.sleep(1.0)  # let blocks start on both workers
    victim = next(iter(dask_processes.worker_pids().values()))
    os.kill(victim, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr

    assert np.array_equal(_predictions(tmp_path / "storm"), _predictions(tmp_path / "calm"))
    calm = json.loads((tmp_path / "calm" / "result.json").read_text())
    storm = json.loads((tmp_path / "storm" / "result.json").read_text())
    assert storm["metrics"] == calm["metrics"]
    print(
        f"predict stage: {calm['timings_s']['predict']} s undisturbed, {storm['timings_s']['predict']} s "
        "with a worker SIGKILLed"
    )
    dask_processes.wait_for_workers(2)  # the nanny restarted it


def test_three_concurrent_jobs_match_their_solo_results_and_write_a_shared_stage_once(dask_processes, store, tmp_path):
    jobs = [("knn_downscaled", "a"), ("knn_downscaled", "b"), ("knn_baseline", "c")]
    drivers = [
        subprocess.Popen(
            _command(job, store, tmp_path / tag, dask_processes.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job, tag in jobs
    ]
    outputs = [driver.communicate(timeout=900) for driver in drivers]
    for driver, (_, stderr) in zip(drivers, outputs):
        assert driver.returncode == 0, stderr

    accuracy = {
        tag: json.loads((tmp_path / tag / "result.json").read_text())["metrics"]["test_accuracy"] for _, tag in jobs
    }
    assert round(accuracy["a"], 4) == round(accuracy["b"], 4) == 0.9676
    assert round(accuracy["c"], 4) == 0.9688
    assert np.array_equal(_predictions(tmp_path / "a"), _predictions(tmp_path / "b"))
    stage_lines = sorted(
        line.split(": ")[1].split(" ")[0]
        for _, stderr in outputs[:2]
        for line in stderr.splitlines()
        if "transform downscale:" in line
    )
    assert stage_lines == ["skipped", "written"]  # the second waited on the stage lock, then reused it


def test_scheduler_loss_fails_fast_with_one_line_and_leaves_the_store_intact(store, tmp_path):
    doomed = DaskProcesses()
    try:
        driver = subprocess.Popen(
            _command("knn_baseline", store, tmp_path, doomed.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_predict(driver, tmp_path)
        doomed.scheduler.send_signal(signal.SIGKILL)
        started = time.monotonic()
        _, stderr = driver.communicate(timeout=180)
        elapsed = time.monotonic() - started
    finally:
        doomed.close()
    assert driver.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mnist-dask: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"mnist-dask: error: lost the connection to the Dask scheduler {doomed.address}"
    ), stderr
    assert elapsed < 120
    assert not (tmp_path / "result.json").exists()
    assert Store(store).is_complete("raw")
    shown = _cli("status", str(tmp_path))  # what the run's record says about it afterwards
    assert shown.returncode == 1, shown.stderr  # a failed run
    assert "failed" in shown.stdout.splitlines()[0], shown.stdout
    (error,) = [line for line in shown.stdout.splitlines() if line.startswith("  error: ")]
    lost = f"  error: lost the connection to the Dask scheduler {doomed.address} during predict"
    assert error.startswith(lost), error
    assert "Cancelled" not in error, error


def test_ctrl_c_on_the_default_local_cluster_is_one_line_with_no_worker_tracebacks(store, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the command answers it, its workers stay quiet."""
    command = [sys.executable, "-m", "mnist_dask", "run", str(REPO / "jobs" / "knn_baseline.toml")]
    driver = subprocess.Popen(
        [*command, "--store", store, "--run-dir", str(tmp_path), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    _wait_for_predict(driver, tmp_path)
    os.killpg(driver.pid, signal.SIGINT)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.splitlines()[-1] == "mnist-dask: interrupted"
    assert not (tmp_path / "result.json").exists()
    shown = _cli("status", str(tmp_path))
    assert shown.returncode == 1, shown.stderr  # an interrupted run failed
    assert "  error: interrupted during predict" in shown.stdout.splitlines(), shown.stdout


def test_workers_out_of_memory_is_the_same_one_line_in_the_run_record_with_advice_that_fits_the_options(
    store, tmp_path
):
    """One local worker with too little memory for predict: the advice names a larger --memory-limit, not fewer
    --workers (a per-worker limit does not grow with fewer of them), and the run's record keeps the user's line."""
    run_dir = tmp_path / "memrun"
    done = _cli(
        *["run", str(REPO / "jobs" / "knn_baseline.toml"), "--store", store, "--run-dir", str(run_dir)],
        *["--memory-limit", "300MB", "--workers", "1"],
    )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("mnist-dask: error: --memory-limit 300MB: the local worker ran out of memory"), line
    assert "--memory-limit 600MB" in line and "--workers" not in line, line
    record = json.loads((run_dir / "status.json").read_text())
    assert record["state"] == "failed", record
    assert record["error"] == line.removeprefix("mnist-dask: error: "), record
    assert record["traceback_tail"] == "", record
