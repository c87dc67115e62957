"""The study's published figures, reproduced by the shipped jobs on real MNIST.

The jobs run through the real CLI against a real ``dask scheduler`` with two
``dask worker`` processes on 127.0.0.1 (conftest's ``dask_processes``), and once on
the default local cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scheduler_address(dask_processes):
    return dask_processes.address


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("study") / "mnist.zarr")


def _run(job: str, store: str, run_dir: Path, *options: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "mnist_dask",
        "run",
        str(REPO / "jobs" / f"{job}.toml"),
        "--store",
        store,
        "--run-dir",
        str(run_dir),
        *options,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{job}: test accuracy" in done.stdout
    return json.loads((run_dir / "result.json").read_text())


def test_grid_search_finds_4_distance_and_scores_09714(scheduler_address, store, mnist_dir, tmp_path):
    result = _run("knn_grid_search", store, tmp_path, "--scheduler", scheduler_address, "--source", f"idx:{mnist_dir}")
    assert result["search"]["best_params"] == {"n_neighbors": 4, "weights": "distance"}
    assert result["search"]["best_score"] == pytest.approx(0.9716166666666666, abs=1e-15)  # as published
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


def test_nothing_in_the_store_or_run_folders_needs_unpickling(store, tmp_path_factory):
    """Results are Zarr with plain numeric dtypes and JSON: no object arrays, no pickle files."""
    import zarr

    from mnist_dask.data.store import Store

    arrays = [node for _, node in Store(store).walk() if isinstance(node, zarr.Array)]
    assert len(arrays) >= 12
    for array in arrays:
        assert array.dtype.kind in "biuf", (array.path, array.dtype)
    base = Path(store).parent.parent
    assert not [p for p in base.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib", ".npy")]
