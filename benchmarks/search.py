"""Benchmark: the k-NN grid search (weights x n_neighbors 3-5, cv=5), ours vs scikit-learn vs dask-ml.

Prints one table, every row measured in this run on real MNIST training images:
- ours: ``mnist_dask.neighbors.search.grid_search`` (one exact neighbour search per fold) on a
  LocalCluster of ``--workers`` single-threaded worker processes;
- scikit-learn: ``GridSearchCV(KNeighborsClassifier(), grid, cv=5, n_jobs=-1)``;
- dask-ml, the textbook cached pipeline: ``KNeighborsTransformer`` then
  ``KNeighborsClassifier(metric='precomputed')`` under ``dask_ml.model_selection.GridSearchCV``
  on the same cluster.
It checks that every method's cv_results agree (mean, std, every split's score and the rank of
every candidate), reports each method's peak RSS, the machine's load average and sgemm rate.

    python benchmarks/search.py [--rows 60000] [--skip dask-ml]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID = {"weights": ["uniform", "distance"], "n_neighbors": [3, 4, 5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--rows", type=int, default=60_000, help="training rows searched (default all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", action="append", default=[], choices=["sklearn", "dask-ml"])
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method, print JSON
    args = parser.parse_args()
    if args.method:
        seconds, results, best, peak = globals()[args.method](args.data, args.rows, args.workers)
        print(json.dumps([seconds, _scores(results), best, peak]))
        return
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())

    runs = [("ours (mnist_dask.neighbors.search on LocalCluster)", _ours)]
    if "sklearn" not in args.skip:
        runs.append(("scikit-learn GridSearchCV(n_jobs=-1)", _sklearn))
    if "dask-ml" not in args.skip:
        runs.append(("dask-ml GridSearchCV, cached KNeighborsTransformer pipeline", _dask_ml))
    rows = [(label, *_in_subprocess(function, args.data, args.rows, args.workers)) for label, function in runs]

    ours_seconds, ours_scores = rows[0][1], rows[0][2]
    from knn import measure_sgemm_rate

    print(
        f"\nk-NN grid search on {args.rows:,} real MNIST training images: 6 candidates x 5 folds, "
        f"{multiprocessing.cpu_count()} cores, {args.workers} workers; sgemm {measure_sgemm_rate() / 1e9:.0f} GFLOP/s; "
        f"load average before {load}, after {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
    )
    print(
        "| method | seconds | ours faster by | best params | best CV score | cv_results (mean, std, splits, rank) "
        "| peak RSS (MB) |"
    )
    print("| --- | ---: | ---: | --- | ---: | --- | ---: |")
    for label, seconds, scores, best, peak in rows:
        same = _compare(scores, ours_scores)
        print(
            f"| {label} | {seconds:.1f} | {seconds / ours_seconds:.1f}x | {best} | "
            f"{max(scores['mean_test_score']):.5f} | {same} | {peak} |"
        )


def _scores(results: dict) -> dict[str, list[float]]:
    """The numeric cv_results columns: mean, std, every split's test score and the rank."""
    keys = [
        k for k in results if k.startswith("split") or k in ("mean_test_score", "std_test_score", "rank_test_score")
    ]
    return {k: [float(v) for v in results[k]] for k in keys}


def _compare(scores: dict[str, list[float]], ours: dict[str, list[float]]) -> str:
    """'identical' or the largest difference per column."""
    diffs = {k: float(np.max(np.abs(np.asarray(scores[k]) - np.asarray(ours[k])))) for k in ours}
    worst = {k: v for k, v in diffs.items() if v}
    return "identical" if not worst else ", ".join(f"{k} {v:.1e}" for k, v in worst.items())


def _ours(data: str, rows: int, workers: int):
    import dask.array as da
    from distributed import Client, LocalCluster

    from mnist_dask.neighbors.search import grid_search

    X, y = _load(data, rows)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        result = grid_search(da.from_array(X, chunks=(5000, 784)), y, GRID, cv=5, scheduler=client)
        seconds = time.perf_counter() - start
        peak = max([_peak_mb(), *client.run(_peak_mb).values()])
    return seconds, result.cv_results, result.best_params, peak


def _sklearn(data: str, rows: int, workers: int):
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _load(data, rows)
    start = time.perf_counter()
    search = GridSearchCV(KNeighborsClassifier(), GRID, cv=5, n_jobs=-1).fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, search.cv_results_, search.best_params_, _peak_mb(children=True)


def _dask_ml(data: str, rows: int, workers: int):
    from dask_ml.model_selection import GridSearchCV
    from distributed import Client, LocalCluster
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer
    from sklearn.pipeline import Pipeline

    X, y = _load(data, rows)
    pipeline = Pipeline(
        [
            ("graph", KNeighborsTransformer(n_neighbors=max(GRID["n_neighbors"]), mode="distance")),
            ("knn", KNeighborsClassifier(metric="precomputed")),
        ]
    )
    grid = {f"knn__{key}": values for key, values in GRID.items()}
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        search = GridSearchCV(pipeline, grid, cv=5, scheduler=client, refit=False).fit(X, y)
        seconds = time.perf_counter() - start
        peak = max([_peak_mb(), *client.run(_peak_mb).values()])
    best = int(np.argmin(search.cv_results_["rank_test_score"]))
    params = {k.removeprefix("knn__"): v for k, v in search.cv_results_["params"][best].items()}
    return seconds, search.cv_results_, params, peak


def _load(data: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(Path(data) / name, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)

    X = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:rows]
    return X, read("train-labels-idx1-ubyte.gz", 8)[:rows]


def _peak_mb(children: bool = False) -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        own = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return own // 1024


def _in_subprocess(function, data: str, rows: int, workers: int):
    """One measurement per fresh process (``--method``), so its peak RSS is its own."""
    command = [
        sys.executable,
        __file__,
        "--method",
        function.__name__,
        "--data",
        data,
        "--rows",
        str(rows),
        "--workers",
        str(workers),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function.__name__} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
