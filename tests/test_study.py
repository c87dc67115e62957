"""The study's published figures, reproduced by the shipped jobs on real MNIST.

The jobs run through the real CLI against a real ``dask scheduler`` with two
``dask worker`` processes on 127.0.0.1, and once on the default local cluster.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler_address():
    """A real scheduler and two single-threaded worker processes, torn down after the module."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--dashboard-address", "127.0.0.1:0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = subprocess.Popen([DASK, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                "--memory-limit", "4GB", "--no-dashboard", "--host", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for process in (workers, scheduler):
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("study") / "mnist.zarr")


def _run(job: str, store: str, run_dir: Path, *options: str) -> dict:
    command = [sys.executable, "-m", "mnist_dask", "run", str(REPO / "jobs" / f"{job}.toml"),
               "--store", store, "--run-dir", str(run_dir), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{job}: test accuracy" in done.stdout
    return json.loads((run_dir / "result.json").read_text())


def test_grid_search_finds_4_distance_and_scores_09714(scheduler_address, store, mnist_dir, tmp_path):
    result = _run("knn_grid_search", store, tmp_path, "--scheduler", scheduler_address,
                  "--source", f"idx:{mnist_dir}")
    assert result["search"]["best_params"] == {"n_neighbors": 4, "weights": "distance"}
    # 0.9716 published; our copy's training rows are in another order (shared/data/mnist/README.md)
    assert round(result["search"]["best_score"], 4) == 0.9737
    assert len(result["search"]["cv_results"]["mean_test_score"]) == 6
    assert round(result["metrics"]["test_accuracy"], 4) == 0.9714
    assert (tmp_path / "predictions.zarr").is_dir()


def test_augmented_model_scores_09763(scheduler_address, store, tmp_path):
    result = _run("knn_augmented", store, tmp_path, "--scheduler", scheduler_address)
    assert result["dataset"] == "derived/shift5x" and result["model"]["train_rows"] == 300_000
    assert result["search"]["best_params"] == {"n_neighbors": 4, "weights": "distance"}
    assert round(result["metrics"]["test_accuracy"], 4) == 0.9763


def test_downscaled_k5_scores_09676_with_the_k_sweep(scheduler_address, store, tmp_path):
    result = _run("knn_downscaled", store, tmp_path, "--scheduler", scheduler_address)
    assert round(result["metrics"]["test_accuracy"], 4) == 0.9676
    sweep = result["sweep"]["test_accuracy_by_k"]
    assert list(sweep) == [str(k) for k in range(1, 21)]
    assert sweep["5"] == result["metrics"]["test_accuracy"]


def test_baseline_k5_scores_09688_on_a_local_cluster(store, tmp_path):
    result = _run("knn_baseline", store, tmp_path, "--workers", "2")
    metrics = result["metrics"]
    assert round(metrics["test_accuracy"], 4) == 0.9688
    assert sum(map(sum, metrics["confusion_matrix"])) == 10_000
    assert metrics["test_errors"] == 312
    assert set(result["timings_s"]) >= {"ingest", "predict"}
