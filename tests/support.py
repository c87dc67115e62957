"""Test helpers shared by the suite: small generated MNIST look-alikes, real Dask processes, free ports."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# -- small generated inputs (IDX and CSV files written byte by byte) ------------------------
IDX_STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}


class SmallMnist:
    """A tiny MNIST look-alike (40 train / 20 test images) and writers for its IDX and CSV files."""

    def __init__(self, seed: int = 7, n_train: int = 40, n_test: int = 20) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = {
            "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
            "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
        }
        # every pixel value 0 and 255 and every digit occur, so the CSV round trip is meaningful
        self.arrays["train_images"][0, 0, :2] = (0, 255)
        self.arrays["train_labels"][:10] = np.arange(10)

    @staticmethod
    def images_bytes(
        images: np.ndarray, *, magic: int = 0x803, dims: tuple[int, ...] | None = None, gz: bool = False
    ) -> bytes:
        dims = images.shape if dims is None else dims
        raw = struct.pack(f">I{len(dims)}I", magic, *dims) + np.ascontiguousarray(images, np.uint8).tobytes()
        return gzip.compress(raw) if gz else raw

    @staticmethod
    def labels_bytes(labels: np.ndarray, *, magic: int = 0x801, n: int | None = None, gz: bool = False) -> bytes:
        raw = struct.pack(">II", magic, len(labels) if n is None else n) + np.asarray(labels, np.uint8).tobytes()
        return gzip.compress(raw) if gz else raw

    @staticmethod
    def csv_text(images: np.ndarray, labels: np.ndarray, *, header: bool = False) -> str:
        lines = ["label," + ",".join(f"{r + 1}x{c + 1}" for r in range(28) for c in range(28))] if header else []
        lines += [f"{label}," + ",".join(map(str, image.reshape(-1).tolist())) for image, label in zip(images, labels)]
        return "\n".join(lines) + "\n"

    def write_idx(
        self, folder: Path, *, gz: bool = True, overrides: dict[str, bytes] | None = None, omit: tuple[str, ...] = ()
    ) -> Path:
        """Write the four IDX files (``<stem>.gz`` or plain ``<stem>``); ``overrides`` replaces a file's bytes."""
        folder.mkdir(parents=True, exist_ok=True)
        for key, stem in IDX_STEMS.items():
            if key in omit:
                continue
            split, what = key.split("-")
            array = self.arrays[f"{split}_{what}"]
            data = self.images_bytes(array, gz=gz) if what == "images" else self.labels_bytes(array, gz=gz)
            if overrides and key in overrides:
                data = overrides[key]
            (folder / (stem + (".gz" if gz else ""))).write_bytes(data)
        return folder

    def write_csv(self, folder: Path, *, header: bool = False) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for split in ("train", "test"):
            path = folder / f"{split}.csv"
            path.write_text(
                self.csv_text(self.arrays[f"{split}_images"], self.arrays[f"{split}_labels"], header=header)
            )
            paths.append(path)
        return paths[0], paths[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker --nworkers N`` (with nannies) on 127.0.0.1."""

    def __init__(self, n_workers: int = 2, memory_limit: str = "4GB"):
        import subprocess
        import sys

        dask = str(Path(sys.executable).with_name("dask"))
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler = subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                self.address.rsplit(":", 1)[1],
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers = subprocess.Popen(
            [
                dask,
                "worker",
                self.address,
                "--nworkers",
                str(n_workers),
                "--nthreads",
                "1",
                "--memory-limit",
                memory_limit,
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_for_workers(n_workers)

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        import time

        from distributed import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(n, timeout=timeout)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def worker_pids(self) -> dict[str, int]:
        import os

        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            return client.run(os.getpid)

    def close(self) -> None:
        for process in (self.workers, self.scheduler):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
