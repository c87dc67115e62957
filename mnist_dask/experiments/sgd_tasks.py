"""Cross-validated SGD with every (fold, one-vs-all class) fit as its own cluster task, bit for bit as scikit-learn.

``SGDClassifier`` fits a multiclass problem as one binary SGD per class, each seeded from
``RandomState(random_state).randint(MAX_INT, size=n_classes)``, all starting from the same
schedule state; scikit-learn runs them in threads of one process. A binary ``SGDClassifier``
with that class's seed, fitted on ``y == class``, runs the very same SGD (same labels, same
weights, same seed), so the 10 classes of every fold can run as separate tasks across the
cluster and be assembled into the same coefficients (checked against scikit-learn in the tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import Client
from sklearn.base import clone
from sklearn.linear_model import SGDClassifier

MAX_INT = np.iinfo(np.int32).max  # scikit-learn's seed range for the one-vs-all fits

Fold = tuple[np.ndarray, np.ndarray]  # (training rows, test rows)


def cross_val_decisions(
    client: Client, estimator: SGDClassifier, X: np.ndarray, y: np.ndarray, folds: list[Fold]
) -> np.ndarray:
    """Each row's decision scores from the fold that holds it out, as ``cross_val_predict(method="decision_function")``.

    Shape (n,) for two classes, (n, n_classes) otherwise; one cluster task per fold and class.
    """
    classes = np.unique(y)
    binary = len(classes) == 2
    seeds = ova_seeds(estimator.random_state, len(classes))
    X_remote = client.scatter(X, broadcast=True)
    tasks = []
    for train, _ in folds:
        fold_classes = np.unique(y[train])
        if len(fold_classes) != len(classes):
            raise ValueError("every training fold must hold every class, as scikit-learn's folds do")
        targets = (
            [(y[train] == classes[1], estimator.random_state)]
            if binary
            else [(y[train] == c, int(seed)) for c, seed in zip(classes, seeds)]
        )
        tasks.append(
            [
                client.submit(_fit_binary, estimator, X_remote, train, target, seed, pure=False)
                for target, seed in targets
            ]
        )
    fitted = client.gather(tasks)
    decisions = np.empty((len(y),) if binary else (len(y), len(classes)))
    for (_, test), parts in zip(folds, fitted):
        coef = np.vstack([c for c, _ in parts])
        intercept = np.concatenate([i for _, i in parts])
        scores = X[test] @ coef.T + intercept
        decisions[test] = scores.ravel() if binary else scores
    return decisions


def cross_val_predictions(
    client: Client, estimator: SGDClassifier, X: np.ndarray, y: np.ndarray, folds: list[Fold]
) -> np.ndarray:
    """``cross_val_predict(estimator, X, y, cv=folds)``: the class with the highest decision score."""
    classes = np.unique(y)
    decisions = cross_val_decisions(client, estimator, X, y, folds)
    if decisions.ndim == 1:
        return classes[(decisions > 0).astype(int)]
    return classes[np.argmax(decisions, axis=1)]


def ova_seeds(random_state: Any, n_classes: int) -> np.ndarray:
    """The seeds scikit-learn gives the one-vs-all fits of a multiclass SGDClassifier."""
    if not isinstance(random_state, (int, np.integer)):
        raise ValueError("the SGD fits must be seeded (random_state an integer) to be reproducible as tasks")
    return np.random.RandomState(random_state).randint(MAX_INT, size=n_classes)


def _fit_binary(
    estimator: SGDClassifier, X: np.ndarray, rows: np.ndarray, target: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(On a worker) one binary SGD on ``X[rows]`` against ``target``: its (coef (1, d), intercept (1,))."""
    model = clone(estimator).set_params(random_state=seed).fit(X[rows], target)
    return model.coef_, model.intercept_
