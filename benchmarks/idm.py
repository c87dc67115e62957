"""Measure the IDM distance: the compiled (numba) loop against the numpy reference, one core.

Real MNIST queries, each with its nearest training images as candidates (the re-rank's
actual work), for each (warp, context) asked for. Prints microseconds per (query,
candidate) pair for both paths (the fastest of --repeat runs), their ratio, and the largest
relative difference of the distances (float32 sums: about 1e-7).

    .venv/bin/python benchmarks/idm.py --queries 300 --candidates 30 --warps 1,2,3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knn import REPO, load_mnist


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, time both paths per (warp, context), print the table."""
    import dask
    from threadpoolctl import threadpool_limits

    from mnist_dask.neighbors import compiled
    from mnist_dask.neighbors.idm import idm_distances, sobel_gradients
    from mnist_dask.neighbors.knn import kneighbors

    args = _parser().parse_args(argv)
    if not compiled.available():
        print("numba is not importable: nothing to compare", file=sys.stderr)
        return 1
    mnist = load_mnist(args.data)
    train, test = mnist["train_images"], mnist["test_images"][: args.queries]
    lazy = kneighbors(test.reshape(len(test), -1), train.reshape(len(train), -1), args.candidates)
    _, nearest = dask.compute(*lazy, scheduler="threads")
    queries = sobel_gradients(test)
    candidates = sobel_gradients(train[np.asarray(nearest).ravel()]).reshape(*np.shape(nearest), 2, 28, 28)
    pairs = candidates.shape[0] * candidates.shape[1]
    print(f"{args.queries} test images x their {args.candidates} nearest training images = {pairs:,} pairs, one core")
    head = ["warp", "context", "numpy us/pair", "compiled us/pair", "speed-up", "max rel diff"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (4, 7, 13, 16, 8, 12))))
    with threadpool_limits(1):
        for warp in args.warps:
            for context in args.contexts:
                times, values = {}, {}
                for path in (False, True):
                    idm_distances(queries[:1], candidates[:1], warp, context, use_compiled=path)  # compile / warm
                    best = float("inf")
                    for _ in range(args.repeat):
                        start = time.perf_counter()
                        values[path] = idm_distances(queries, candidates, warp, context, use_compiled=path)
                        best = min(best, time.perf_counter() - start)
                    times[path] = best / pairs * 1e6
                diff = float(np.max(np.abs(values[True] - values[False]) / np.maximum(values[False], 1e-12)))
                print(
                    f"{warp:>4} {context:>7} {times[False]:>13.1f} {times[True]:>16.1f} "
                    f"{times[False] / times[True]:>7.1f}x {diff:>12.1e}",
                    flush=True,
                )
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist", help="MNIST IDX folder")
    parser.add_argument("--queries", type=int, default=300, help="test images")
    parser.add_argument("--candidates", type=int, default=30, help="nearest training images per test image")
    parser.add_argument("--warps", type=_ints, default=[1, 2, 3], help="comma-separated warps")
    parser.add_argument("--contexts", type=_ints, default=[1], help="comma-separated context radii")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the fastest counts")
    return parser


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


if __name__ == "__main__":
    sys.exit(main())
