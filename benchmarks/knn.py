"""Benchmark exact k-NN (mnist_dask.neighbors.knn) against scikit-learn brute, FAISS and the GEMM floor.

For each training-set size, every method runs in its own fresh Python process (so that
ru_maxrss is that method's peak), classifies the MNIST test images with k=4 and
distance weights, and saves its predictions; the parent prints one table with the
times, ratios, peak memory, and whether the predictions agree (with the reason for
every disagreement).  Sizes above 60,000 use the 5x shifted training set (original plus
one-pixel shifts right, left, down and up, zero filled); sizes above 300,000 the 25x set
(every shift by up to 2 pixels, the original first).

Methods: ``ours`` (KNNClassifier, pruned where it pays, dask threads), ``plain`` (the same with
``pruning="off"``: the blocked float32 GEMM kernel over all columns), ``cluster`` (ours on a
LocalCluster of 2 single-threaded workers with ``--memory-limit`` each, the training rows read
from a Zarr store written beforehand; the peak RSS of each worker is reported), ``sklearn``,
``faiss``.  The table gives times as ratios to ours and the float32 GEMM floor of brute force.

    .venv/bin/python benchmarks/knn.py --n-test 10000 --sizes 60000,300000
    .venv/bin/python benchmarks/knn.py --sizes 60000,300000,1500000 --methods ours,cluster,sklearn,faiss
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
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
K = 4
METHODS = ("ours", "plain", "cluster", "sklearn", "faiss")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every method for every size, and print the table."""
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if not methods or methods[0] != "ours" or set(methods) - set(METHODS):
        raise SystemExit(f"--methods must start with 'ours' and name only {', '.join(METHODS)}")
    rate = measure_sgemm_rate()
    print(
        f"sgemm rate: {rate / 1e9:.1f} GFLOP/s (float32 numpy matmul, best of 3); n_test={args.n_test}, k={K}, "
        f"{os.cpu_count()} cores; load average {_load()}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for size in sizes:
            results = {m: _run_worker(m, size, args, Path(scratch)) for m in methods}
            rows.append((size, results, _agreement(size, results, args)))
    _print_table(rows, rate, args.n_test, methods)
    print(f"load average at the end: {_load()}")
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
    """The first `size` rows of the original (size <= 60,000), the 5x or the 25x shifted training set."""
    images, labels = mnist["train_images"], mnist["train_labels"]
    if size > 5 * len(images):
        images, labels = shifted_25x(images), np.tile(labels, 25)
    elif size > len(images):
        images, labels = shifted_5x(images), np.tile(labels, 5)
    if size > len(images):
        raise SystemExit(f"at most {len(images)} training rows are available, asked for {size}")
    return images[:size].reshape(size, -1), labels[:size]


def shifted_25x(images: np.ndarray) -> np.ndarray:
    """Original images followed by copies shifted by every (dx, dy) with |dx|, |dy| <= 2 (zero fill)."""
    from mnist_dask.transforms.kernels import shift_images, shift_offsets

    offsets = shift_offsets(2, "square")
    out = np.empty((len(offsets), *images.shape), dtype=images.dtype)
    for c, (dx, dy) in enumerate(offsets):
        out[c] = shift_images(images, dx, dy)
    return out.reshape(-1, *images.shape[1:])


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
    if args.worker == "cluster":
        seconds, labels, neighbors, workers_mb = _run_cluster(X_train, y_train, X_test, args)
    else:
        workers_mb = []
        seconds, (labels, neighbors) = _timed(lambda: _METHOD_RUNNERS[args.worker](X_train, y_train, X_test))
    np.save(args.out / f"{args.worker}-{args.size}-labels.npy", labels)
    if neighbors is not None:
        np.save(args.out / f"{args.worker}-{args.size}-neighbors.npy", neighbors)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    report = {"seconds": seconds, "peak_mb": peak, "extra_mb": peak - baseline, "workers_mb": workers_mb}
    print(json.dumps(report))
    return 0


def _import_method(method: str) -> None:
    """Import what a method needs, so that import time is not counted as run time."""
    import dask.array  # noqa: F401  (all methods vote with mnist_dask.neighbors.knn, which imports dask)

    import mnist_dask.neighbors.knn  # noqa: F401

    if method == "sklearn":
        import sklearn.neighbors  # noqa: F401
    if method == "faiss":
        import faiss  # noqa: F401


def _run_ours(X_train, y_train, X_test, pruning="auto"):
    """mnist_dask.neighbors.knn, dask threads scheduler: fit, then kneighbors k=4 and predict as one graph.

    The numpy queries are wrapped exactly as the estimator's numpy path does, so that the
    neighbours (kept to explain disagreements) and the predictions share one computation.
    """
    import dask
    import dask.array as da
    from threadpoolctl import threadpool_limits

    from mnist_dask.neighbors.knn import DEFAULT_TEST_CHUNK, KNNClassifier

    # as the estimator's numpy path does: one BLAS thread per task, one task per core
    with dask.config.set(scheduler="threads"), threadpool_limits(limits=1, user_api="blas"):
        model = KNNClassifier(n_neighbors=K, weights="distance", pruning=pruning).fit(X_train, y_train)
        queries = da.from_array(X_test, chunks=(DEFAULT_TEST_CHUNK, -1))
        (_, neighbors), labels = dask.compute(model.kneighbors(queries), model.predict(queries))
    return labels, neighbors


def _run_plain(X_train, y_train, X_test):
    """The same estimator with pruning off: the blocked float32 GEMM kernel over all columns."""
    return _run_ours(X_train, y_train, X_test, pruning="off")


def _run_cluster(X_train, y_train, X_test, args):
    """Ours on a LocalCluster (2 workers x 1 thread, --memory-limit each), training rows from a Zarr store.

    The store is written before the clock starts (a warm store); the time covers fit (the
    projection, on the cluster) and predict. Returns (seconds, labels, neighbours, peak RSS MB
    per worker, sampled every 0.25 s).
    """
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from mnist_dask.neighbors.knn import DEFAULT_TEST_CHUNK, KNNClassifier

    store = args.out / f"train-{args.size}.zarr"
    da.from_array(X_train, chunks=(args.train_chunk, -1)).to_zarr(str(store), overwrite=True)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        peaks: dict[str, float] = {}
        done = threading.Event()

        def sample() -> None:  # ru_maxrss is useless here: a spawned worker inherits the parent's
            while not done.wait(0.25):
                for worker, rss in client.run(_rss_mb).items():
                    peaks[worker] = max(peaks.get(worker, 0.0), rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        X = da.from_zarr(str(store))
        model = KNNClassifier(n_neighbors=K, weights="distance").fit(X, y_train)
        queries = da.from_array(X_test, chunks=(DEFAULT_TEST_CHUNK, -1))
        (_, neighbors), labels = dask.compute(model.kneighbors(queries), model.predict(queries))
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return seconds, labels, neighbors, sorted(peaks.values())


def _rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


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


_METHOD_RUNNERS = {"ours": _run_ours, "plain": _run_plain, "sklearn": _run_sklearn, "faiss": _run_faiss}


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
        "--memory-limit",
        args.memory_limit,
        "--train-chunk",
        str(args.train_chunk),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} at {size} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    workers = f", worker peaks {'/'.join(f'{w:.0f}' for w in report['workers_mb'])} MB" if report["workers_mb"] else ""
    print(f"  {method:8s} n_train={size:>7}: {report['seconds']:.2f} s{workers}; load {_load()}", flush=True)
    report["labels"] = np.load(out / f"{method}-{size}-labels.npy")
    neighbors = out / f"{method}-{size}-neighbors.npy"
    report["neighbors"] = np.load(neighbors) if neighbors.exists() else None
    return report


# ----------------------------------------------------------------------------- agreement


def _agreement(size: int, results: dict, args: argparse.Namespace) -> str:
    """'identical' or, per other method, how many predictions differ from ours and why."""
    notes = []
    for method in list(results)[1:]:
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


def _print_table(rows: list, rate: float, n_test: int, methods: list[str]) -> None:
    """One table: times, GEMM floor, every method's time over ours, peak memory, agreement."""
    others = methods[1:]
    head = (
        f"{'n_train':>8} {'floor s':>8} "
        + " ".join(f"{m + ' s':>10}" for m in methods)
        + " "
        + " ".join(f"{m + '/ours':>12}" for m in others)
        + f" {'ours/floor':>10}  peak MB per method (over data); cluster: per worker  predictions"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for size, res, agree in rows:
        floor = 2.0 * n_test * size * 784 / rate
        t = {m: res[m]["seconds"] for m in methods}
        mem = "/".join(
            "+".join(f"{w:.0f}" for w in res[m]["workers_mb"]) if res[m]["workers_mb"] else f"{res[m]['peak_mb']:.0f}"
            for m in methods
        )
        print(
            f"{size:>8} {floor:>8.2f} "
            + " ".join(f"{t[m]:>10.2f}" for m in methods)
            + " "
            + " ".join(f"{t[m] / t['ours']:>12.2f}" for m in others)
            + f" {t['ours'] / floor:>10.2f}  {mem}  {agree}"
        )


def _timed(func):
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


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
    p.add_argument("--methods", default="ours,sklearn,faiss", help=f"comma-separated, ours first: {', '.join(METHODS)}")
    p.add_argument("--memory-limit", default="3GB", help="per-worker memory limit of the cluster method")
    p.add_argument("--train-chunk", type=int, default=20_000, help="train rows per Zarr chunk (cluster method)")
    p.add_argument("--scratch", default=None, help="folder for temporary files (default: the system's)")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
