"""Run a job end to end on the cluster: ingest, transforms, search, fit, predict, evaluate.

Stages already complete in the store are skipped. Predictions are computed chunk by
chunk on the workers and written to ``<run dir>/predictions.zarr``; ``result.json`` is
written last (atomically), so a run folder with a result is a finished run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client, span

from mnist_dask import __version__
from mnist_dask.cluster import run_stage
from mnist_dask.transforms.registry import run_transform
from mnist_dask.experiments.metrics import classification_metrics
from mnist_dask.data.ingest import ingest
from mnist_dask.jobs.spec import Job
from mnist_dask.neighbors.knn import KNNClassifier, kneighbors, vote
from mnist_dask.jobs.records import RunStatus, write_run_json
from mnist_dask.neighbors.search import grid_search
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store

def run_job(job: Job, store: Store, client: Client, run_dir: Path, source: Source | None = None,
            log: Callable[[str], None] = print, status: RunStatus | None = None) -> dict[str, Any]:
    """Run ``job`` and return its result (also written to ``run_dir/result.json``).

    Its progress is kept in ``run_dir/status.json`` (see mnist_dask.jobs.records).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)  # a stale result must not pass for this run
    status = status or RunStatus(run_dir, run_dir.name, job.name)
    status.running()

    def logged(line: str) -> None:
        status.log(line)
        log(line)

    try:
        result = _run_job(job, store, client, run_dir, source, logged, status)
    except BaseException as exc:
        status.failed(exc)
        raise
    status.finished(result)
    return result


def _run_job(job: Job, store: Store, client: Client, run_dir: Path, source: Source | None,
             log: Callable[[str], None], status: RunStatus) -> dict[str, Any]:
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"job": job.name, "job_file": job.path, "description": job.description,
                              "store": store.url, "package_version": __version__}

    with _timed(timings, status, "ingest"):
        if source is not None or not store.is_complete("raw"):
            from mnist_dask.data.sources import parse_source

            outcome = ingest(source or parse_source(None), store, client)
            log(f"ingest: {outcome.action} ({', '.join(f'{k} {v:,}' for k, v in outcome.rows.items())})")
    if job.experiment is not None:
        from mnist_dask.experiments import EXPERIMENTS

        context = ExperimentContext(store=store, client=client, run_dir=run_dir, log=log, timings=timings)
        with _timed(timings, status, job.experiment), span(job.experiment):
            result.update(EXPERIMENTS[job.experiment].run(context, dict(job.params)))
        return _finish(job, result, timings, run_dir, store, log)
    dataset = "raw"
    for step in job.steps:
        with _timed(timings, status, f"transform {step.transform}"):
            outcome = run_transform(store, client, step.transform, step.params, input_stage=dataset)
            dataset = outcome.stage
            log(f"transform {step.transform}: {outcome.action} -> {dataset}")
    result["dataset"] = dataset

    params = dict(job.model)
    if job.search is not None:
        with _timed(timings, status, "search"), span("search"):
            on = "raw" if job.search.on == "raw" else dataset
            X, y = store.read_xy(on, "train")
            groups = _groups(store, on)
            found = grid_search(X, y.compute(), job.search.param_grid, cv=job.search.cv, groups=groups,
                                scheduler=client)
        params = {**found.best_params, **job.model}
        result["search"] = {"dataset": on, "cv": job.search.cv, "group_folds": groups is not None,
                            "best_params": found.best_params, "best_score": found.best_score,
                            "cv_results": found.cv_results}
        log(f"search: best {found.best_params}, cv accuracy {found.best_score:.4f}")

    X_train, y_train = store.read_xy(dataset, "train")
    X_test, y_test = store.read_xy(dataset, "test")
    y_true = y_test.compute()
    result["model"] = {"estimator": "KNNClassifier (exact, blocked)", **params,
                       "train_rows": int(X_train.shape[0]), "test_rows": int(X_test.shape[0])}
    with _timed(timings, status, "predict"):
        y_pred = _predict_to_zarr(KNNClassifier(**params).fit(X_train, y_train), X_test, run_dir, client)
    result["metrics"] = classification_metrics(y_true, y_pred)
    log(f"predict: test accuracy {result['metrics']['test_accuracy']:.4f}")

    if job.sweep is not None:
        with _timed(timings, status, "sweep"):
            result["sweep"] = _k_sweep(X_train, y_train.compute(), X_test, y_true, job.sweep, client)
    return _finish(job, result, timings, run_dir, store, log)


@dataclass(frozen=True)
class ExperimentContext:
    """What an experiment gets: the store (raw/ ingested), the cluster, its run folder, a logger."""

    store: Store
    client: Client
    run_dir: Path
    log: Callable[[str], None]
    timings: dict[str, float]


def _finish(job: Job, result: dict[str, Any], timings: dict[str, float], run_dir: Path, store: Store,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Attach published figures and timings, write result.json atomically, then the report."""
    if job.expect:
        metrics = result.get("metrics", {})
        result["expected"] = {key: {"published": value, "measured": metrics.get(key)}
                              for key, value in job.expect.items()}
    result["timings_s"] = timings
    write_run_json(run_dir / "result.json", result)
    try:  # after result.json: a report failure must not lose the finished run
        from mnist_dask.report.render import write_report

        write_report(run_dir, store)
    except Exception as exc:  # noqa: BLE001
        log(f"warning: report.html not written ({type(exc).__name__}: {exc})")
    return result


def _predict_to_zarr(model: KNNClassifier, X_test: da.Array, run_dir: Path, client: Client) -> np.ndarray:
    """Predict chunk by chunk on the workers, writing probabilities and labels to predictions.zarr."""
    target = run_dir / "predictions.zarr"
    shutil.rmtree(target, ignore_errors=True)
    proba = model.predict_proba(X_test)
    predicted = proba.map_blocks(lambda p: model.classes_[np.argmax(p, axis=1)], drop_axis=1,
                                 dtype=model.classes_.dtype, name="knn-predicted")
    run_stage(client, "predict", [
        proba.to_zarr(str(target), component="proba", overwrite=True, compute=False),
        predicted.to_zarr(str(target), component="predicted", overwrite=True, compute=False),
    ])
    return da.from_zarr(str(target), component="predicted").compute()


def _k_sweep(X_train: da.Array, y_train: np.ndarray, X_test: da.Array, y_true: np.ndarray,
             sweep: dict[str, Any], client: Client) -> dict[str, float]:
    """Test accuracy for every k in the sweep from one neighbour search for the largest k."""
    ks = sorted(sweep["n_neighbors"])
    with span("sweep"):
        distances, indices = client.compute(kneighbors(X_test, X_train, ks[-1]), sync=True)
    classes = np.unique(y_train)
    accuracy = {}
    for k in ks:
        proba = vote(y_train[indices[:, :k]], distances[:, :k], sweep["weights"], classes)
        accuracy[str(k)] = float(np.mean(classes[np.argmax(proba, axis=1)] == y_true))
    return {"weights": sweep["weights"], "test_accuracy_by_k": accuracy}


def _groups(store: Store, stage: str) -> np.ndarray | None:
    """Source image of each row when a dataset holds several copies of an image, for group folds."""
    if stage == "raw":
        return None
    source = store.read(f"{stage}/train/source_index").compute()
    return source if len(np.unique(source)) < len(source) else None


@contextmanager
def _timed(timings: dict[str, float], status: RunStatus, name: str) -> Iterator[None]:
    status.stage(name)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 3)
    status.stage_done(name, timings[name])  # only a stage that completed
