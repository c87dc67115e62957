"""scikit-learn fits fanned out as cluster tasks give exactly scikit-learn's results."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mnist_dask.experiments import tasks


@pytest.fixture(scope="module")
def rows(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist["train_images"][:2000].reshape(-1, 784).astype(np.float64), mnist["train_labels"][:2000]


def _folds(X: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(3).split(X, y))


@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "scaled"])
def test_sgd_per_fold_and_class_equals_cross_val_predict(client, rows, scaled):
    X, y = rows
    X = StandardScaler().fit_transform(X) if scaled else X
    sgd = SGDClassifier(random_state=42, max_iter=50)  # fewer epochs than the notebooks': the same code path
    expected = cross_val_predict(sgd, X, y, cv=3, method="decision_function")
    [decisions] = tasks.gather(
        client, tasks.sgd_cross_val_decisions(client, sgd, tasks.scatter(client, X), X, y, _folds(X, y))
    )
    np.testing.assert_array_equal(decisions, expected)
    np.testing.assert_array_equal(
        tasks.decisions_to_labels(decisions, np.unique(y)), cross_val_predict(sgd, X, y, cv=3)
    )


def test_binary_sgd_decisions_equal_cross_val_predict(client, rows):
    X, digits = rows
    y = digits == 5
    sgd = SGDClassifier(random_state=42, max_iter=50)
    expected = cross_val_predict(sgd, X, y, cv=3, method="decision_function")
    X_remote = tasks.scatter(client, X)
    [decisions] = tasks.gather(client, tasks.sgd_cross_val_decisions(client, sgd, X_remote, X, y, _folds(X, y)))
    np.testing.assert_array_equal(decisions, expected)


def test_generic_cross_val_and_one_vs_rest_equal_scikit_learn_submitted_together(client, rows):
    X, y = rows
    X_small, y_small = X[:600], y[:600]
    forest = RandomForestClassifier(n_estimators=10, random_state=42)
    X_remote, X_small_remote = tasks.scatter(client, X), tasks.scatter(client, X_small)
    proba, ovr_svc, ovr_logistic = tasks.gather(
        client,
        tasks.cross_val(client, forest, X_remote, y == 5, _folds(X, y == 5), method="predict_proba"),
        tasks.one_vs_rest(client, SVC(), X_small_remote, y_small),
        tasks.one_vs_rest(client, LogisticRegression(max_iter=50), X_small_remote, y_small),
    )
    np.testing.assert_array_equal(proba, cross_val_predict(forest, X, y == 5, cv=3, method="predict_proba"))
    expected_svc = OneVsRestClassifier(SVC()).fit(X_small, y_small)
    np.testing.assert_array_equal(ovr_svc.predict(X[600:900]), expected_svc.predict(X[600:900]))
    np.testing.assert_array_equal(ovr_svc.decision_function(X[600:900]), expected_svc.decision_function(X[600:900]))
    expected_lr = OneVsRestClassifier(LogisticRegression(max_iter=50)).fit(X_small, y_small)
    # lbfgs sums with the worker's BLAS (one thread), not the test process's: equal to ~1e-9
    np.testing.assert_allclose(
        ovr_logistic.predict_proba(X[600:900]), expected_lr.predict_proba(X[600:900]), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_array_equal(ovr_logistic.predict(X[600:900]), expected_lr.predict(X[600:900]))
    assert len(ovr_svc.estimators_) == 10


def test_unseeded_sgd_is_refused():
    with pytest.raises(ValueError, match="seeded"):
        tasks.ova_seeds(None, 10)
