"""scikit-learn fits as cluster tasks, all submitted before any is awaited, with scikit-learn's exact results.

An experiment declares its fits (cross-validated predictions, one-vs-rest models, plain
fits) as :class:`Pending` work; :func:`gather` submits nothing itself but waits for every
future at once and assembles each result, so all the independent fits of an experiment
(folds, classes, models) share the workers instead of running one model after another.

Exactness: a cross-validated prediction is ``clone(estimator).fit(X[train], y[train])``
applied to ``X[test]``, as ``cross_val_predict`` does. One-vs-rest fits are the binary fits
``OneVsRestClassifier`` makes (same label columns), set on a ``OneVsRestClassifier`` so that
scikit-learn's own ``predict``/``predict_proba`` combine them. A multiclass
``SGDClassifier`` is one binary SGD per class, each seeded from
``RandomState(random_state).randint(MAX_INT, size=n_classes)``: a binary ``SGDClassifier``
with that class's seed, fitted on ``y == class``, runs the very same SGD, so its classes
can run as separate tasks (all checked against scikit-learn in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, Future
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import LabelBinarizer

MAX_INT = np.iinfo(np.int32).max  # scikit-learn's seed range for the one-vs-all SGD fits
Fold = tuple[np.ndarray, np.ndarray]  # (training rows, test rows)


@dataclass
class Pending:
    """Submitted work: its futures (any nesting of lists) and how to turn their results into the answer."""

    futures: Any
    assemble: Callable[[Any], Any]


def gather(client: Client, *pending: Pending) -> list[Any]:
    """Wait for every pending piece of work at once and return each assembled result, in order."""
    results = client.gather([p.futures for p in pending])
    return [p.assemble(result) for p, result in zip(pending, results)]


def scatter(client: Client, array: np.ndarray) -> Future:
    """Put an array on every worker once (tasks then refer to it instead of shipping it again)."""
    return client.scatter(array, broadcast=True)


def cross_val(
    client: Client, estimator: BaseEstimator, X: Future, y: np.ndarray, folds: list[Fold], method: str = "predict"
) -> Pending:
    """``cross_val_predict(estimator, X, y, cv=folds, method=method)``, one task per fold."""
    futures = [client.submit(_fit_apply, estimator, X, y, train, method, test, pure=False) for train, test in folds]
    return Pending(futures, lambda parts: _by_fold(parts, folds, len(y)))


def fit(client: Client, estimator: BaseEstimator, X: Future, y: np.ndarray, rows: np.ndarray | None = None) -> Pending:
    """A fresh clone of ``estimator`` fitted on ``X[rows]`` (all rows by default), as one task."""
    return Pending(client.submit(_fit, estimator, X, y, rows, pure=False), lambda model: model)


def one_vs_rest(client: Client, estimator: BaseEstimator, X: Future, y: np.ndarray) -> Pending:
    """``OneVsRestClassifier(estimator).fit(X, y)`` with each class's binary fit as its own task."""
    binarizer = LabelBinarizer(sparse_output=True)
    columns = binarizer.fit_transform(y).tocsc()
    futures = [client.submit(_fit, estimator, X, column.toarray().ravel(), None, pure=False) for column in columns.T]

    def assemble(estimators: list[BaseEstimator]) -> OneVsRestClassifier:
        model = OneVsRestClassifier(estimator)
        model.label_binarizer_, model.classes_, model.estimators_ = binarizer, binarizer.classes_, estimators
        if hasattr(estimators[0], "n_features_in_"):
            model.n_features_in_ = estimators[0].n_features_in_
        return model

    return Pending(futures, assemble)


def sgd_cross_val_decisions(
    client: Client, estimator: SGDClassifier, X: Future, X_local: np.ndarray, y: np.ndarray, folds: list[Fold]
) -> Pending:
    """``cross_val_predict(sgd, X, y, cv=folds, method="decision_function")`` with one task per (fold, class).

    Shape (n,) for two classes, (n, n_classes) otherwise.
    """
    classes = np.unique(y)
    binary = len(classes) == 2
    seeds = ova_seeds(estimator.random_state, len(classes))
    futures = []
    for train, _ in folds:
        if len(np.unique(y[train])) != len(classes):
            raise ValueError("every training fold must hold every class, as scikit-learn's folds do")
        targets = (
            [(y[train] == classes[1], estimator.random_state)]
            if binary
            else [(y[train] == c, int(seed)) for c, seed in zip(classes, seeds)]
        )
        futures.append(
            [client.submit(_fit_sgd_binary, estimator, X, train, target, seed, pure=False) for target, seed in targets]
        )

    def assemble(fitted: list[list[tuple[np.ndarray, np.ndarray]]]) -> np.ndarray:
        decisions = np.empty((len(y),) if binary else (len(y), len(classes)))
        for (_, test), parts in zip(folds, fitted):
            coef = np.vstack([c for c, _ in parts])
            intercept = np.concatenate([i for _, i in parts])
            scores = X_local[test] @ coef.T + intercept  # LinearClassifierMixin.decision_function
            decisions[test] = scores.ravel() if binary else scores
        return decisions

    return Pending(futures, assemble)


def predict(
    client: Client, model: BaseEstimator, X: np.ndarray, method: str = "predict", chunk: int = 1000
) -> np.ndarray:
    """``model.<method>(X)`` computed on the cluster, one task per chunk of rows, the model shipped once."""
    remote = client.scatter(model, broadcast=True)
    futures = [client.submit(_apply, remote, method, X[i : i + chunk], pure=False) for i in range(0, len(X), chunk)]
    return np.concatenate(client.gather(futures))


def decisions_to_labels(decisions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """What ``predict`` makes of decision scores: positive -> classes[1] (binary), else the highest score's class."""
    if decisions.ndim == 1:
        return classes[(decisions > 0).astype(int)]
    return classes[np.argmax(decisions, axis=1)]


def ova_seeds(random_state: Any, n_classes: int) -> np.ndarray:
    """The seeds scikit-learn gives the one-vs-all fits of a multiclass SGDClassifier."""
    if not isinstance(random_state, (int, np.integer)):
        raise ValueError("the SGD fits must be seeded (random_state an integer) to be reproducible as tasks")
    return np.random.RandomState(random_state).randint(MAX_INT, size=n_classes)


def _by_fold(parts: list[np.ndarray], folds: list[Fold], n: int) -> np.ndarray:
    """Per-fold outputs on the test rows put back in row order."""
    first = np.asarray(parts[0])
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for (_, test), part in zip(folds, parts):
        out[test] = part
    return out


def _fit(estimator: BaseEstimator, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None) -> BaseEstimator:
    """(On a worker) a fresh clone fitted on the rows."""
    if rows is None:
        if len(np.unique(y)) < 2:
            raise ValueError("a one-vs-rest column holds a single label")
        return clone(estimator).fit(X, y)
    return clone(estimator).fit(X[rows], y[rows])


def _fit_apply(
    estimator: BaseEstimator, X: np.ndarray, y: np.ndarray, train: np.ndarray, method: str, test: np.ndarray
) -> np.ndarray:
    """(On a worker) fit a clone on the training rows and apply ``method`` to the test rows."""
    model = clone(estimator).fit(X[train], y[train])
    return np.asarray(getattr(model, method)(X[test]))


def _apply(model: BaseEstimator, method: str, X: np.ndarray) -> np.ndarray:
    """(On a worker) a fitted model's method on a chunk of rows."""
    return np.asarray(getattr(model, method)(X))


def _fit_sgd_binary(
    estimator: SGDClassifier, X: np.ndarray, rows: np.ndarray, target: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(On a worker) one binary SGD on ``X[rows]`` against ``target``: its (coef (1, d), intercept (1,))."""
    model = clone(estimator).set_params(random_state=seed).fit(X[rows], target)
    return model.coef_, model.intercept_
