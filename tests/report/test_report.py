"""report.html: written by a real (small) run on real MNIST, rebuilt by ``mnist-dask report``, and
rendered in headless Chromium (screenshot not blank, every embedded image decodes)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST = 6000, 1000


def _idx(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array, np.uint8).tobytes()


@pytest.fixture(scope="module")
def run_dir(mnist, tmp_path_factory) -> Path:
    """knn_baseline run through the CLI on the first 6,000/1,000 real MNIST images (a small real run)."""
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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_dask",
            "run",
            str(REPO / "jobs" / "knn_baseline.toml"),
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


def test_run_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    result = json.loads((run_dir / "result.json").read_text())
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']?(https?:|file:|//)""", page)
    images = _embedded_pngs(page)
    assert len(images) >= 3  # sample grid, confusion matrix, misclassified images
    for image in images:
        assert image.size[0] > 50 and image.size[1] > 50 and np.asarray(image.convert("L")).std() > 5
    assert f"{result['metrics']['test_accuracy']:.4f}" in page  # ours, beside the published 0.9688
    assert "0.9688" in page and "Timings per stage" in page and "Misclassified test images" in page


def test_report_command_rebuilds_it_and_refuses_a_folder_without_result(run_dir, tmp_path):
    (run_dir / "report.html").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "report", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.html").is_file()
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
    # the figures are where the ink is: the digit grid etc. render as images, not broken-image icons
    assert all(image.getbbox() is not None for image in _embedded_pngs((run_dir / "report.html").read_text()))


def _embedded_pngs(page: str) -> list[Image.Image]:
    """Every <img> of the page decoded with Pillow (each must be an embedded, valid PNG)."""
    sources = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    assert sources
    images = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        assert image.format == "PNG"
        images.append(image)
    return images
