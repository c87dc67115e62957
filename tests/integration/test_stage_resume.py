"""A transform stage killed half way is redone to exactly the uninterrupted result (the 25x shift set).

The store holds the first 6,000 real training images (and 1,000 test images): their 25x
expansion is 150,000 rows in 150 chunks of 1,000, enough to kill the driver with most chunks
unwritten, at a tenth of the full set's cost; the property does not depend on the number of rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from support import write_idx_files

from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.transforms.kernels import shift_offsets

TRAIN_ROWS, TEST_ROWS, CHUNK = 6_000, 1_000, 1_000


def _expected_order(seed: int, n: int, m: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n * m)


@pytest.fixture
def store(tmp_path, client, mnist) -> Store:
    """A store of the first TRAIN_ROWS real training images and TEST_ROWS test images, ingested from IDX files."""
    rows = {"train": TRAIN_ROWS, "test": TEST_ROWS}  # keys of mnist: train_images, train_labels, test_...
    folder = write_idx_files(tmp_path / "idx", {key: array[: rows[key.split("_")[0]]] for key, array in mnist.items()})
    store = Store(str(tmp_path / "mnist.zarr"))
    ingest(Source("idx", (str(folder),)), store, client)
    return store


def test_radius2_killed_half_way_resumes_to_the_uninterrupted_result(store, client, mnist):
    """A 25x expansion whose driver is SIGKILLed mid-write is refused, then re-run to the exact result."""
    command = [
        sys.executable,
        "-m",
        "mnist_dask",
        "transform",
        "shift",
        "--radius",
        "2",
        "--shape",
        "square",
        "--chunk-size",
        str(CHUNK),
        "--store",
        store.url,
        "--scheduler",
        client.scheduler.address,
    ]
    chunks = Path(store.url) / "derived" / "shift25x" / "train" / "images" / "c"
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not chunks.exists() or sum(1 for _ in chunks.rglob("*")) < 20):
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()

    assert not store.is_complete("derived/shift25x")
    with pytest.raises(UserError, match="incomplete"):
        store.read("derived/shift25x/train/images")

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert store.is_complete("derived/shift25x")

    group = zarr.open_group(store.url, mode="r")
    images, offsets = group["derived/shift25x/train/images"], group["derived/shift25x/train/offset"][:]
    n = TRAIN_ROWS * 25
    assert images.shape == (n, 28, 28)
    order = _expected_order(42, TRAIN_ROWS, 25)
    table = np.array(shift_offsets(2, "square"))
    assert np.array_equal(group["derived/shift25x/train/source_index"][:], order % TRAIN_ROWS)
    assert np.array_equal(offsets, table[order // TRAIN_ROWS])
    raw = mnist["train_images"][:TRAIN_ROWS]
    for start in range(0, n, 100_000):  # every row, a slab at a time
        block, rows = images[start : start + 100_000], order[start : start + 100_000]
        for k, (dx, dy) in enumerate(table):
            pick = np.flatnonzero(rows // TRAIN_ROWS == k)
            expected = ndi.shift(raw[rows[pick] % TRAIN_ROWS], [0, dy, dx], order=0, cval=0, mode="constant")
            assert np.array_equal(block[pick], expected)
