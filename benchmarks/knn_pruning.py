"""Measure the pruned exact k-NN kernel on one core: what each choice of m, step and chunk costs.

Runs the chained blocks of mnist_dask.neighbors.knn's pruned graph in this process, one test
chunk after another (one BLAS thread), for every combination asked for, and prints per
(query, train row) nanoseconds split into the bound GEMM, the selection pass and the exact
distances, the train rows checked exactly per query, and the projection's cost per train
row (the fastest of --repeat runs, which resists other load on a shared machine). Every
run's neighbours are checked against the first run's (they must be identical).

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
    if args.downscale > 1:  # float rows: the local means of factor x factor pixel blocks
        from mnist_dask.transforms.kernels import downscale_local_mean

        X_train, X_test = (
            downscale_local_mean(x.reshape(-1, 28, 28), args.downscale).reshape(len(x), -1).astype(np.float32)
            for x in (X_train, X_test)
        )
    plain_ns = _plain_ns(X_train, X_test, args) if args.plain else float("nan")
    print(
        f"n_train={args.size}, n_test={args.n_test}, width {X_train.shape[1]} ({X_train.dtype}), k={args.k}, "
        f"test chunk {args.test_chunk}, one core; plain kernel {plain_ns:.2f} ns/pair; load average {_load()}",
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
                    runs = [_run(X_train, X_test, args.k, m, step, chunk, args.test_chunk) for _ in range(args.repeat)]
                    _, row, neighbours = min(runs, key=lambda run: run[0])
                    first = neighbours if first is None else first
                    same = "yes" if np.array_equal(first, neighbours) else "NO"
                    print(f"{m:>4} {step:>6} {chunk:>7} {row} {same:>5}", flush=True)
    print(f"load average after: {_load()}")
    return 0


def _run(X_train, X_test, k, m, step, chunk, test_chunk):
    """One configuration: fit, prepare, chained blocks; returns (search seconds, formatted row, neighbours)."""
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
    return search_s, row, np.concatenate(results)


def _plain_ns(X_train, X_test, args) -> float:
    """ns per (query, train row) of the plain blocked kernel on the same data (blocks of --chunk[0] rows)."""
    from threadpoolctl import threadpool_limits

    from mnist_dask.neighbors.blocked import block_kneighbors, merge_kneighbors

    chunk = _ints(args.chunk)[0]
    with threadpool_limits(limits=1, user_api="blas"):
        start = time.perf_counter()
        for q in range(0, len(X_test), args.test_chunk):
            queries, best = X_test[q : q + args.test_chunk], None
            for s in range(0, len(X_train), chunk):
                part = block_kneighbors(queries, X_train[s : s + chunk], s, args.k)
                best = part if best is None else merge_kneighbors(best, part)
        return (time.perf_counter() - start) / (len(X_test) * len(X_train)) * 1e9


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
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration; the fastest is shown")
    p.add_argument("--downscale", type=int, default=1, help="search float local means of factor x factor blocks")
    p.add_argument("--plain", action="store_true", help="also time the plain blocked kernel on the same data")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
