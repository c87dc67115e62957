"""``mnist-dask classify``: real MNIST test digits redrawn as dark-on-light PNG/JPEG/BMP files,
classified with the model of a real run; every kind of bad input is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_dask.jobs.classify import mnist_style

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(mnist_dir, tmp_path_factory) -> Path:
    """The knn_baseline run (k=5 uniform on the 60,000 real training images)."""
    root = tmp_path_factory.mktemp("classify")
    done = _cli(
        "run",
        REPO / "jobs" / "knn_baseline.toml",
        "--source",
        f"idx:{mnist_dir}",
        "--store",
        root / "mnist.zarr",
        "--run-dir",
        root / "run",
        "--workers",
        "2",
    )
    assert done.returncode == 0, done.stderr
    return root / "run"


def test_preprocessing_an_mnist_image_gives_it_back(mnist):
    correlations = [
        np.corrcoef(mnist_style(image.astype(float)).ravel(), image.ravel())[0, 1]
        for image in mnist["test_images"][:50]
    ]
    assert np.median(correlations) > 0.95 and np.mean(correlations) > 0.9


def test_classifies_redrawn_test_digits(run_dir, mnist, tmp_path):
    paths, labels = [], []
    for i in range(10):
        big = np.asarray(Image.fromarray(255 - mnist["test_images"][i]).resize((100, 100), Image.Resampling.BICUBIC))
        page = np.full((140, 130), 255, np.uint8)
        page[25:125, 10:110] = big
        path = tmp_path / f"digit{i}.{('png', 'jpg', 'bmp')[i % 3]}"
        Image.fromarray(page).save(path)
        paths.append(path)
        labels.append(int(mnist["test_labels"][i]))
    done = _cli("classify", *paths, "--run", run_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 10
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == t for p, t in zip(predicted, labels)) >= 9
    assert all("probability" in line for line in lines)


def test_bad_inputs_are_one_line_naming_the_file(run_dir, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000), 255).save(huge)  # 48 megapixels: refused from its header
    good = tmp_path / "good.png"
    drawn = np.full((40, 40), 255, np.uint8)
    drawn[5:35, 18:22] = 0  # a "1"
    Image.fromarray(drawn).save(good)
    cases = [
        ((empty, "--run", run_dir), "empty.png"),
        ((text, "--run", run_dir), "notes.png"),
        ((huge, "--run", run_dir), "huge.png"),
        ((tmp_path / "missing.png", "--run", run_dir), "missing.png"),
        ((good, "--run", tmp_path), "result.json"),
    ]
    for args, name in cases:
        done = _cli("classify", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert name in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
