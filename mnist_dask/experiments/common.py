"""Helpers shared by the scikit-learn experiments: loading MNIST once, fanning work out, thinning curves.

Registers no experiment. Work fans out with distributed's joblib backend: inside
:func:`on_cluster`, scikit-learn's ``n_jobs=-1`` loops (cross-validation folds,
one-vs-rest fits, forest trees) run as tasks on the experiment's Dask cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import joblib
import numpy as np
from distributed import Client

from mnist_dask.data.store import Store
from mnist_dask.experiments import ParamsError
from mnist_dask.experiments.params import RowSamples
from mnist_dask.report import spec

MAX_CURVE_POINTS = 500
MISCLASSIFIED_SHOWN = 40


def load_splits(
    store: Store, rows: RowSamples, dtype: Any = np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """X_train, y_train, X_test, y_test: the sampled rows of both raw splits (see :func:`load_split`)."""
    return (*load_split(store, "train", rows.sample, dtype), *load_split(store, "test", rows.test_sample, dtype))


def load_split(store: Store, split: str, sample: int = 0, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """The first ``sample`` rows (0 = all) of a raw split as numpy (X as ``dtype``, y uint8), like the notebooks."""
    X, y = store.read_xy("raw", split)
    if sample:
        X, y = X[:sample], y[:sample]
    return X.compute().astype(dtype, copy=False), y.compute()


def first_rows_check(
    train: tuple[str, ...] = ("sample",), test: tuple[str, ...] = ()
) -> Callable[[Any, dict[str, int]], None]:
    """An experiment's ``check``: refuse a parameter naming a count of first rows (0: all) of raw's training
    (``train``) or test (``test``) split above the rows there are, which ``X[:n]`` would silently cut to fewer.

    A value left at its default is refused too (a 2,000-row default on a 40-row store), the message saying so.
    """

    def check(params: Any, rows: dict[str, int]) -> None:
        """Raise a :class:`ParamsError` for the first named parameter asking for more rows than raw's split has."""
        defaults = {field.name: field.default for field in dataclasses.fields(params)}
        for split, kind, keys in (("train", "training", train), ("test", "test", test)):
            for key in keys:
                value = getattr(params, key)
                if value > rows[split]:
                    default = " (the default)" if value == defaults.get(key) else ""
                    raise ParamsError(
                        f"params.{key} = {value}{default}: more than the {rows[split]} {kind} rows of raw"
                    )

    return check


@contextmanager
def on_cluster(client: Client) -> Iterator[None]:
    """Route joblib (scikit-learn's n_jobs) to the Dask cluster of ``client`` for the block's duration."""
    with client.as_current(), joblib.parallel_backend("dask"):
        yield


def downsample(*columns: np.ndarray, points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """Columns of a curve reduced to at most ``points`` evenly spaced rows (first and last kept), as lists."""
    n = len(columns[0])
    keep = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int)) if n else np.array([], int)
    return [np.asarray(c, dtype=np.float64)[keep].tolist() for c in columns]


def fold_accuracies(y_true: np.ndarray, y_pred: np.ndarray, folds: list[np.ndarray]) -> list[float]:
    """Accuracy of cross-validated predictions on each test fold: cross_val_score's scores for a deterministic model."""
    return [float(np.mean(y_true[test] == y_pred[test])) for test in folds]


def run_tasks(client: Client, function: Any, calls: list[tuple]) -> list[Any]:
    """Run ``function(*args)`` for each args tuple as parallel cluster tasks; numpy arguments are scattered first.

    The scattered futures stay referenced here until every result is gathered, so no task loses its inputs.
    """
    scattered = [[client.scatter(a) if isinstance(a, np.ndarray) else a for a in args] for args in calls]
    futures = [client.submit(function, *args, pure=False) for args in scattered]
    return client.gather(futures)


def misclassified_digits(
    wrong: np.ndarray,
    caption: Callable[[int], str],
    stage: str = "raw",
    note: str = "titles: test index, true → predicted",
) -> list[spec.Display]:
    """The first misclassified test images (their indices ``wrong``) as a digits display; none when all are right."""
    if not len(wrong):
        return []
    shown = wrong[:MISCLASSIFIED_SHOWN]
    return [
        spec.digits(
            f"Misclassified test digits ({len(wrong):,} in all; the first {len(shown)})",
            [spec.stored_digits("test", shown, captions=[caption(int(i)) for i in shown], stage=stage)],
            caption=note,
        )
    ]
