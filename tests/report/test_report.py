"""report.html of a real (small) ``knn`` run on real MNIST with a grid search and a k sweep: the displays the
experiment declared, drawn and tabulated with the run's own figures; rebuilt by ``mnist-dask report`` from
result.json alone (with a note where the store is gone); rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import ReportPage

N_TRAIN, N_TEST = 6000, 1000
JOB = """experiment = "knn"
description = "k-NN on the first 6,000/1,000 images: grid search, then a k sweep"

[params.search]
cv = 3
param_grid = {n_neighbors = [1, 3, 5], weights = ["uniform", "distance"]}

[params.sweep]
n_neighbors = [1, 2, 3, 4, 5, 6]

[expect]
test_accuracy = 0.9688
"""


def _idx(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array, np.uint8).tobytes()


@pytest.fixture(scope="module")
def run_dir(mnist, tmp_path_factory) -> Path:
    """The knn job above run through the CLI on the first 6,000/1,000 real MNIST images (a small real run)."""
    root = tmp_path_factory.mktemp("report")
    source = root / "mnist-subset"
    source.mkdir()
    for name, key, n, magic in (
        ("train-images-idx3-ubyte", "train_images", N_TRAIN, 0x803),
        ("train-labels-idx1-ubyte", "train_labels", N_TRAIN, 0x801),
        ("t10k-images-idx3-ubyte", "test_images", N_TEST, 0x803),
        ("t10k-labels-idx1-ubyte", "test_labels", N_TEST, 0x801),
    ):
        (source / name).write_bytes(_idx(mnist[key][:n], magic))
    run = root / "run"
    job = root / "knn_small.toml"
    job.write_text(JOB)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_dask",
            "run",
            str(job),
            "--source",
            f"idx:{source}",
            "--store",
            str(root / "mnist.zarr"),
            "--run-dir",
            str(run),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return run


def test_the_report_shows_the_declared_displays_with_the_runs_figures(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    metrics, search = result["metrics"], result["search"]
    page = ReportPage((run_dir / "report.html").read_text())  # self-contained: no script, links; PNGs decode
    declared = [display["title"] for display in result["report"]]
    errors = metrics["test_errors"]
    assert declared == [
        "Sample test digits",
        "Confusion matrix",
        "Errors by true digit",
        f"Misclassified test digits ({errors:,} in all; the first 40)",
        "Scores per class",
        "Grid search",
        "Grid search: CV accuracy by k",
        "Test accuracy by k",
        "Classification report",
    ]
    assert page.titles[:3] == ["Run", "Model", "Metrics"]
    assert page.titles[-len(declared) - 1 : -1] == declared and page.left_out == {}
    assert set(page.images) == set(declared) - {"Scores per class", "Grid search", "Classification report"}
    assert page.facts("Metrics")["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    assert page.column("Published figures beside ours", "published") == {"test_accuracy": "0.9688"}
    assert page.column("Published figures beside ours", "ours")["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    per_class = page.tables["Scores per class"]
    assert per_class["header"] == ["class", "precision", "recall", "f1", "support"]
    assert per_class["rows"][5] == [
        "5",
        *(f"{metrics['per_class']['5'][key]:.4f}" for key in ("precision", "recall", "f1")),
        str(metrics["per_class"]["5"]["support"]),
    ]
    grid = page.tables["Grid search"]
    assert len(grid["rows"]) == 6 and grid["highlight"] is not None
    best = grid["rows"][grid["highlight"]]
    assert best[:3] == [
        str(search["best_params"]["n_neighbors"]),
        search["best_params"]["weights"],
        f"{search['best_score']:.4f}",
    ]
    assert best[4] == "1"  # rank
    assert page.texts["Classification report"] == metrics["classification_report"]
    misclassified = next(d for d in result["report"] if d["title"].startswith("Misclassified"))["groups"][0]
    assert len(misclassified["indices"]) == min(errors, 40) and all(
        " " in c and "→" in c for c in misclassified["captions"]
    )
    sweep = next(d for d in result["report"] if d["title"] == "Test accuracy by k")
    assert sweep["x"] == [1, 2, 3, 4, 5, 6] and sweep["series"]["test accuracy"] == list(
        result["sweep"]["test_accuracy_by_k"].values()
    )


def test_report_command_redraws_it_from_result_json_and_notes_a_missing_store(run_dir, tmp_path):
    original = (run_dir / "report.html").read_text()
    (run_dir / "report.html").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "report", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.html").read_text() == original  # the same page, from result.json (and the store)
    copy = tmp_path / "copy"
    copy.mkdir()
    gone = tmp_path / "gone.zarr"  # the run's store, since removed
    moved = {**json.loads((run_dir / "result.json").read_text()), "store": str(gone)}
    (copy / "result.json").write_text(json.dumps(moved))
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "report", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    page = ReportPage((copy / "report.html").read_text())
    stored = {"Sample test digits", next(t for t in page.titles if t.startswith("Misclassified"))}
    assert set(page.left_out) == stored and all(str(gone) in note for note in page.left_out.values())
    assert {"Confusion matrix", "Test accuracy by k"} <= set(page.images)


def test_report_command_refuses_a_folder_without_result(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "report", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "result.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            (run_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # not blank: dark ink on the page
    assert ReportPage((run_dir / "report.html").read_text()).images  # every embedded PNG decodes, none blank
