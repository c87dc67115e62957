"""Benchmark: building the shift-augmented training set, ours vs the notebook's scipy loop.

Prints one table, every row measured in this run on real MNIST:
- the notebook: a Python loop of ``scipy.ndimage.shift`` (240,000 calls for 5x), in memory;
- ours in one process: ``kernels.shift_images`` (numpy slicing) for each offset, in memory;
- ours as a stage: ``mnist-dask transform shift`` on a 2-worker LocalCluster, written to Zarr
  (5x, and the 25x radius-2 set, which the notebook way would not hold in memory).
Peak memory is the peak RSS of each process involved (client and every worker).

    python benchmarks/augment.py [--data ../shared/data/mnist] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    rows = [
        _in_subprocess(_notebook_loop, args.data),
        _in_subprocess(_numpy_expand, args.data),
        *_stages(args.data, args.workers),  # in this process: a Pool worker may not start a cluster
    ]
    baseline = rows[0]["seconds"]
    print(f"\nShift augmentation of real MNIST (60,000 training images), {multiprocessing.cpu_count()} cores\n")
    print("| method | output rows | seconds | speed-up vs notebook | peak RSS per process (MB) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        ratio = f"{baseline / row['seconds']:.0f}x" if row["comparable"] else "n/a (25x)"
        print(f"| {row['method']} | {row['rows']:,} | {row['seconds']:.2f} | {ratio} | {row['peak_mb']} |")


def _notebook_loop(data: str) -> dict:
    """Notebook 000's cell: shift_image per image and direction, appended to lists, then np.array."""
    from scipy.ndimage import shift

    train = _load(data).reshape(-1, 784)
    start = time.perf_counter()
    augmented = [image for image in train]
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        for image in train:
            augmented.append(shift(image.reshape(28, 28), [dy, dx], cval=0, mode="constant").reshape(-1))
    augmented = np.array(augmented)
    shuffled = augmented[np.random.default_rng(42).permutation(len(augmented))]
    seconds = time.perf_counter() - start
    return {
        "method": "notebook: scipy.ndimage.shift loop (in memory)",
        "rows": len(shuffled),
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "comparable": True,
    }


def _numpy_expand(data: str) -> dict:
    """Ours, one process: the shift stage's slicing (kernels.shift_images per offset) plus the same shuffle."""
    from mnist_dask.transforms.kernels import shift_images, shift_offsets

    train = _load(data)
    start = time.perf_counter()
    images = np.concatenate([shift_images(train, dx, dy) for dx, dy in shift_offsets(1, "cross")])
    shuffled = images[np.random.default_rng(42).permutation(len(images))]
    seconds = time.perf_counter() - start
    return {
        "method": "ours: kernels.shift_images slicing (numpy, in memory)",
        "rows": len(shuffled),
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "comparable": True,
    }


def _stages(data: str, workers: int) -> list[dict]:
    """Ours as stages on a LocalCluster: ingest once, then shift5x and shift25x written to Zarr."""
    from distributed import Client, LocalCluster

    from mnist_dask.data.ingest import ingest
    from mnist_dask.data.sources import Source
    from mnist_dask.data.store import Store
    from mnist_dask.transforms.registry import run_transform

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, params, comparable in (("5x", {}, True), ("25x", {"radius": 2, "shape": "square"}, False)):
            # a fresh cluster per row, so each worker's peak RSS belongs to that row alone
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
                ) as cluster,
                Client(cluster) as client,
            ):
                store = Store(str(Path(tmp) / "mnist.zarr"))
                ingest(Source("idx", (data,)), store, client)
                start = time.perf_counter()
                outcome = run_transform(store, client, "shift", params, force=True)
                seconds = time.perf_counter() - start
                peaks = client.run(_peak_mb)
                n = store.read(f"{outcome.stage}/train/labels").shape[0]
            rows.append(
                {
                    "method": f"ours: transform shift {label} on {workers} workers, to Zarr",
                    "rows": n,
                    "seconds": seconds,
                    "comparable": comparable,
                    "peak_mb": "client " + str(_peak_mb()) + ", workers " + ", ".join(str(p) for p in peaks.values()),
                }
            )
    return rows


def _load(data: str) -> np.ndarray:
    import gzip

    with gzip.open(Path(data) / "train-images-idx3-ubyte.gz", "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _in_subprocess(function, *args):
    """Run one measurement in a fresh process so its peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


if __name__ == "__main__":
    sys.exit(main())
