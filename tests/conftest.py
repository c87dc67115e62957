"""Shared fixtures: real MNIST from ../shared/data/mnist, read once per session."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


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
