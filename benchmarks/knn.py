"""Benchmark exact blocked k-NN (mnist_dask.neighbors.knn) against scikit-learn brute, FAISS and the GEMM floor.

For each training-set size, every method runs in its own fresh Python process (so that
ru_maxrss is that method's peak), classifies the MNIST test images with k=4 and
distance weights, and saves its predictions; the parent prints one table with the
times, ratios, peak memory, and whether the predictions agree (with the reason for
every disagreement).  Sizes above 60,000 use the 5x shifted training set (original plus
one-pixel shifts right, left, down and up, zero filled).

    .venv/bin/python benchmarks/knn.py --n-test 10000 --sizes 60000,300000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
K = 4
METHODS = ("ours", "sklearn", "faiss")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every method for every size, and print the table."""
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    rate = measure_sgemm_rate()
    print(
        f"sgemm rate: {rate / 1e9:.1f} GFLOP/s (float32 numpy matmul, best of 3); n_test={args.n_test}, k={K}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            results = {m: _run_worker(m, size, args, Path(scratch)) for m in METHODS}
            rows.append((size, results, _agreement(size, results, args)))
    _print_table(rows, rate, args.n_test)
    return 0


def load_mnist(data: Path) -> dict[str, np.ndarray]:
    """The four MNIST IDX files as uint8 arrays (images flattened to 784 columns)."""

    def read(name: str, header: int) -> np.ndarray:
        with gzip.open(data / name, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=header)

    return {
        "train_images": read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "train_labels": read("train-labels-idx1-ubyte.gz", 8),
        "test_images": read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "test_labels": read("t10k-labels-idx1-ubyte.gz", 8),
    }


def training_set(mnist: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `size` rows of the original (size <= 60,000) or the 5x shifted training set."""
    images, labels = mnist["train_images"], mnist["train_labels"]
    if size > len(images):
        images, labels = shifted_5x(images), np.tile(labels, 5)
    if size > len(images):
        raise SystemExit(f"at most {len(images)} training rows are available, asked for {size}")
    return images[:size].reshape(size, -1), labels[:size]


def shifted_5x(images: np.ndarray) -> np.ndarray:
    """Original images followed by copies shifted one pixel right, left, down and up (zero fill)."""
    n = len(images)
    out = np.zeros((5, n, 28, 28), dtype=images.dtype)
    out[0] = images
    out[1][:, :, 1:] = images[:, :, :-1]  # right
    out[2][:, :, :-1] = images[:, :, 1:]  # left
    out[3][:, 1:, :] = images[:, :-1, :]  # down
    out[4][:, :-1, :] = images[:, 1:, :]  # up
    return out.reshape(5 * n, 28, 28)


def measure_sgemm_rate(m: int = 2_000, n: int = 20_000, d: int = 784) -> float:
    """FLOP/s of a large float32 matmul shaped like the k-NN blocks (best of 3)."""
    rng = np.random.default_rng(0)
    a = rng.random((m, d), dtype=np.float32)
    b = rng.random((n, d), dtype=np.float32)
    a @ b[:1_000].T  # warm up the BLAS threads
    best = min(_timed(lambda: a @ b.T)[0] for _ in range(3))
    return 2.0 * m * n * d / best


# ----------------------------------------------------------------------------- one method, one process


def _worker(args: argparse.Namespace) -> int:
    """Child process: load data, run one method, save predictions, print a JSON line."""
    _import_method(args.worker)  # outside the timed and the measured-memory region
    mnist = load_mnist(Path(args.data))
    X_train, y_train = training_set(mnist, args.size)
    X_test = mnist["test_images"][: args.n_test].reshape(-1, 784)
    baseline = _current_rss_mb()
    seconds, (labels, neighbors) = _timed(lambda: _METHOD_RUNNERS[args.worker](X_train, y_train, X_test))
    np.save(args.out / f"{args.worker}-{args.size}-labels.npy", labels)
    if neighbors is not None:
        np.save(args.out / f"{args.worker}-{args.size}-neighbors.npy", neighbors)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "extra_mb": peak - baseline}))
    return 0


def _import_method(method: str) -> None:
    """Import what a method needs, so that import time is not counted as run time."""
    import dask.array  # noqa: F401  (all methods vote with mnist_dask.neighbors.knn, which imports dask)

    import mnist_dask.neighbors.knn  # noqa: F401

    if method == "sklearn":
        import sklearn.neighbors  # noqa: F401
    if method == "faiss":
        import faiss  # noqa: F401


def _run_ours(X_train, y_train, X_test):
    """mnist_dask.neighbors.knn, dask threads scheduler: kneighbors k=4 and predict as one graph.

    The numpy queries are wrapped exactly as the estimator's numpy path does, so that the
    neighbours (kept to explain disagreements) and the predictions share one computation.
    """
    import dask
    import dask.array as da

    from mnist_dask.neighbors.knn import DEFAULT_TEST_CHUNK, KNNClassifier

    model = KNNClassifier(n_neighbors=K, weights="distance").fit(X_train, y_train)
    queries = da.from_array(X_test, chunks=(DEFAULT_TEST_CHUNK, -1))
    from threadpoolctl import threadpool_limits

    # as the estimator's numpy path does: one BLAS thread per task, one task per core
    with dask.config.set(scheduler="threads"), threadpool_limits(limits=1, user_api="blas"):
        (_, neighbors), labels = dask.compute(model.kneighbors(queries), model.predict(queries))
    return labels, neighbors


def _run_sklearn(X_train, y_train, X_test):
    """scikit-learn brute force on float32 input (its fast ArgKmin path), all cores."""
    from sklearn.neighbors import KNeighborsClassifier

    model = KNeighborsClassifier(n_neighbors=K, weights="distance", algorithm="brute", n_jobs=-1)
    model.fit(X_train.astype(np.float32), y_train)
    return model.predict(X_test.astype(np.float32)), None


def _run_faiss(X_train, y_train, X_test):
    """FAISS IndexFlatL2 (exact scan, float32 distances), voted like scikit-learn."""
    import faiss

    from mnist_dask.neighbors.knn import vote

    index = faiss.IndexFlatL2(X_train.shape[1])
    index.add(np.ascontiguousarray(X_train, dtype=np.float32))
    sq, neighbors = index.search(np.ascontiguousarray(X_test, dtype=np.float32), K)
    classes = np.unique(y_train)
    proba = vote(y_train[neighbors], np.sqrt(np.maximum(sq, 0.0)).astype(np.float64), "distance", classes)
    return classes[np.argmax(proba, axis=1)], neighbors


_METHOD_RUNNERS = {"ours": _run_ours, "sklearn": _run_sklearn, "faiss": _run_faiss}


def _run_worker(method: str, size: int, args: argparse.Namespace, out: Path) -> dict:
    """Run one method in a fresh interpreter and return its JSON report."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--size",
        str(size),
        "--n-test",
        str(args.n_test),
        "--data",
        str(args.data),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} at {size} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {method:8s} n_train={size:>7}: {report['seconds']:.2f} s", flush=True)
    report["labels"] = np.load(out / f"{method}-{size}-labels.npy")
    neighbors = out / f"{method}-{size}-neighbors.npy"
    report["neighbors"] = np.load(neighbors) if neighbors.exists() else None
    return report


# ----------------------------------------------------------------------------- agreement


def _agreement(size: int, results: dict, args: argparse.Namespace) -> str:
    """'identical' or, per other method, how many predictions differ from ours and why."""
    notes = []
    for method in METHODS[1:]:
        differ = np.flatnonzero(results[method]["labels"] != results["ours"]["labels"])
        if differ.size:
            notes.append(f"{method}: {differ.size} differ ({_explain(method, differ, size, results, args)})")
    return "; ".join(notes) or "identical"


def _explain(method: str, rows: np.ndarray, size: int, results: dict, args: argparse.Namespace) -> str:
    """Classify disagreements by comparing exact distances of the two neighbour sets."""
    mnist = load_mnist(Path(args.data))
    X_train, y_train = training_set(mnist, size)
    X_test = mnist["test_images"][: args.n_test].reshape(-1, 784)
    theirs = results[method]["neighbors"]
    if theirs is None:  # scikit-learn's predict does not expose them: ask it for these rows only
        from sklearn.neighbors import KNeighborsClassifier

        model = KNeighborsClassifier(n_neighbors=K, algorithm="brute").fit(X_train.astype(np.float32), y_train)
        theirs = np.zeros_like(results["ours"]["neighbors"])
        theirs[rows] = model.kneighbors(X_test[rows].astype(np.float32), return_distance=False)
    kinds = {
        "farther neighbour picked (float32 rounding)": 0,
        "equal-distance neighbour swapped": 0,
        "same neighbours, near-tie vote": 0,
    }
    for r in rows:
        ours_sq = _exact_sq(X_test[r], X_train[results["ours"]["neighbors"][r]])
        their_sq = _exact_sq(X_test[r], X_train[theirs[r]])
        if set(theirs[r]) == set(results["ours"]["neighbors"][r]):
            kinds["same neighbours, near-tie vote"] += 1
        elif np.array_equal(np.sort(ours_sq), np.sort(their_sq)):
            kinds["equal-distance neighbour swapped"] += 1
        else:
            kinds["farther neighbour picked (float32 rounding)"] += 1
    return ", ".join(f"{v} {k}" for k, v in kinds.items() if v)


def _exact_sq(row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact integer squared distances from one row to several."""
    diff = rows.astype(np.int64) - row.astype(np.int64)
    return (diff * diff).sum(axis=1)


# ----------------------------------------------------------------------------- output


def _print_table(rows: list, rate: float, n_test: int) -> None:
    """One table: times, GEMM floor, ratios, peak memory, agreement."""
    head = (
        f"{'n_train':>8} {'ours s':>8} {'sklearn s':>9} {'faiss s':>8} {'floor s':>8} {'ours/skl':>8} "
        f"{'ours/faiss':>10} {'ours/floor':>10} {'peak MB ours/skl/faiss (over data)':>36}  predictions"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for size, res, agree in rows:
        floor = 2.0 * n_test * size * 784 / rate
        t = {m: res[m]["seconds"] for m in METHODS}
        mem = "/".join(f"{res[m]['peak_mb']:.0f}({res[m]['extra_mb']:.0f})" for m in METHODS)
        print(
            f"{size:>8} {t['ours']:>8.2f} {t['sklearn']:>9.2f} {t['faiss']:>8.2f} {floor:>8.2f} "
            f"{t['ours'] / t['sklearn']:>8.2f} {t['ours'] / t['faiss']:>10.2f} {t['ours'] / floor:>10.2f} "
            f"{mem:>36}  {agree}"
        )


def _timed(func):
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def _current_rss_mb() -> float:
    """Resident set size now, in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _parser() -> argparse.ArgumentParser:
    """Command-line options (the --worker/--size/--out trio is internal)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-test", type=int, default=10_000, help="test images to classify (default 10000)")
    p.add_argument("--sizes", default="60000,300000", help="comma-separated training-set sizes")
    p.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "mnist",
        help="folder with the MNIST IDX .gz files (default ../shared/data/mnist from the repo root)",
    )
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
