"""Measure the pruned exact k-NN kernel on one core: what each choice of m, step and chunk costs.

Runs the chained blocks of mnist_dask.neighbors.knn's pruned graph in this process, one test
chunk after another (one BLAS thread), for every combination asked for, and prints per
(query, train row) nanoseconds split into the bound GEMM, the selection pass and the exact
distances, the train rows checked exactly per query, and the projection's cost per train
row. Every run's neighbours are checked against the first run's (they must be identical).

    .venv/bin/python benchmarks/knn_pruning.py --size 60000 --n-test 2000 --m 32,48,64,80,96
    .venv/bin/python benchmarks/knn_pruning.py --size 300000 --steps 4096,8192,16384 --chunk 60000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knn import REPO, load_mnist, training_set


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every combination, print the table."""
    from threadpoolctl import threadpool_limits

    args = _parser().parse_args(argv)
    mnist = load_mnist(args.data)
    X_train, _ = training_set(mnist, args.size)
    X_test = mnist["test_images"][: args.n_test].reshape(-1, 784)
    print(
        f"n_train={args.size}, n_test={args.n_test}, k={args.k}, test chunk {args.test_chunk}, one core; "
        f"load average {_load()}",
        flush=True,
    )
    head = (
        f"{'m':>4} {'step':>6} {'chunk':>7} {'fit s':>6} {'proj ns/row':>11} {'ns/pair':>8} {'bound':>6} "
        f"{'select':>6} {'exact':>6} {'dense':>6} {'other':>6} {'checked/query':>13} {'same':>5}"
    )
    print(head + "\n" + "-" * len(head), flush=True)
    first = None
    with threadpool_limits(limits=1, user_api="blas"):
        for m in _ints(args.m):
            for step in _ints(args.steps):
                for chunk in _ints(args.chunk):
                    row, neighbours = _run(X_train, X_test, args.k, m, step, chunk, args.test_chunk)
                    first = neighbours if first is None else first
                    same = "yes" if np.array_equal(first, neighbours) else "NO"
                    print(f"{m:>4} {step:>6} {chunk:>7} {row} {same:>5}", flush=True)
    print(f"load average after: {_load()}")
    return 0


def _run(X_train, X_test, k, m, step, chunk, test_chunk):
    """One configuration: fit, prepare, chained blocks; returns (formatted row, neighbours)."""
    from mnist_dask.neighbors import pruned
    from mnist_dask.neighbors.projection import fit_projection
    from mnist_dask.neighbors.pruned import STAT_KEYS, prepare_rows, pruned_kneighbors

    pruned.STEP_ROWS = step
    start = time.perf_counter()
    projection = fit_projection(X_train, m)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    chunks = [(s, prepare_rows(X_train[s : s + chunk], projection, "train")) for s in range(0, len(X_train), chunk)]
    prepare_s = time.perf_counter() - start
    stats = dict.fromkeys(STAT_KEYS, 0.0)
    results = []
    start = time.perf_counter()
    for q in range(0, len(X_test), test_chunk):
        query = prepare_rows(X_test[q : q + test_chunk], projection, "query")
        best = None
        for offset, train in chunks:
            best = pruned_kneighbors(query, train, offset, k, 8, best, stats=stats)
        results.append(best[1])
    search_s = time.perf_counter() - start
    pairs = len(X_test) * len(X_train)
    ns = {key: stats[key] / pairs * 1e9 for key in STAT_KEYS if key.endswith("_s")}
    row = (
        f"{fit_s:>6.2f} {prepare_s / len(X_train) * 1e9:>11.0f} {search_s / pairs * 1e9:>8.2f} "
        f"{ns['bounds_s']:>6.2f} {ns['select_s']:>6.2f} {ns['exact_s']:>6.2f} {ns['dense_s']:>6.2f} "
        f"{ns['other_s']:>6.2f} {stats['pairs'] / len(X_test):>13.1f}"
    )
    return row, np.concatenate(results)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=60_000, help="train rows (above 60,000: the 5x shifted set)")
    p.add_argument("--n-test", type=int, default=2_000)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--m", default="64", help="comma-separated numbers of components")
    p.add_argument("--steps", default="8192", help="comma-separated train rows per bound GEMM")
    p.add_argument("--chunk", default="60000", help="comma-separated train rows per block (chunk)")
    p.add_argument("--test-chunk", type=int, default=1_000)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
