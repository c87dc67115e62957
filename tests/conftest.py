"""Shared fixtures: real MNIST from ../shared/data/mnist (read once per session), clusters, stores.

Everything under tests/integration/ is marked ``integration`` here, so ``-m "not integration"``
is the fast suite.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from support import DaskProcesses, SmallMnist

TESTS = Path(__file__).resolve().parent
MNIST_DIR = TESTS.parent.parent / "shared" / "data" / "mnist"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ as an integration test."""
    for item in items:
        if Path(item.path).is_relative_to(TESTS / "integration"):
            item.add_marker(pytest.mark.integration)


def _read_idx_gz(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four real MNIST IDX files (fails loudly if absent)."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST is expected at {MNIST_DIR} (see DEVELOPERS.md)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> dict[str, np.ndarray]:
    """Real MNIST as numpy arrays: train/test images (N, 28, 28) uint8 and labels (N,) uint8."""
    return {
        "train_images": _read_idx_gz(mnist_dir / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "train_labels": _read_idx_gz(mnist_dir / "train-labels-idx1-ubyte.gz", 8),
        "test_images": _read_idx_gz(mnist_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "test_labels": _read_idx_gz(mnist_dir / "t10k-labels-idx1-ubyte.gz", 8),
    }


@pytest.fixture(scope="session")
def small() -> SmallMnist:
    """Tiny generated MNIST-shaped data with helpers that write it as IDX or CSV files."""
    return SmallMnist()


@pytest.fixture(scope="module")
def dask_processes():
    """A module's real scheduler + two single-threaded worker processes."""
    cluster = DaskProcesses()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def client():
    """A module's real LocalCluster: two single-threaded worker processes on 127.0.0.1, set up as the command's
    local workers are (mnist_dask.worker_setup)."""
    from distributed import Client, LocalCluster

    from mnist_dask.cluster import WORKER_SETUP

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            preload=[WORKER_SETUP],
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory, client, mnist_dir):
    """A module's store with real MNIST ingested into ``raw``."""
    from mnist_dask.data.ingest import ingest
    from mnist_dask.data.sources import Source
    from mnist_dask.data.store import Store

    store = Store(str(tmp_path_factory.mktemp("store") / "mnist.zarr"))
    ingest(Source("idx", (str(mnist_dir),)), store, client)
    return store
