"""SGD cross-validation fanned out per (fold, class) gives exactly scikit-learn's cross_val_predict."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from mnist_dask.experiments.sgd_tasks import cross_val_decisions, cross_val_predictions, ova_seeds


@pytest.fixture(scope="module")
def rows(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist["train_images"][:2000].reshape(-1, 784).astype(np.float64), mnist["train_labels"][:2000]


def _folds(X: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(3).split(X, y))


@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "scaled"])
def test_multiclass_predictions_equal_scikit_learn(client, rows, scaled):
    X, y = rows
    X = StandardScaler().fit_transform(X) if scaled else X
    sgd = SGDClassifier(random_state=42, max_iter=50)  # fewer epochs than the notebooks': the same code path
    expected = cross_val_predict(sgd, X, y, cv=3, method="decision_function")
    np.testing.assert_array_equal(cross_val_decisions(client, sgd, X, y, _folds(X, y)), expected)
    predicted = cross_val_predictions(client, sgd, X, y, _folds(X, y))
    np.testing.assert_array_equal(predicted, np.unique(y)[np.argmax(expected, axis=1)])  # = cross_val_predict


def test_binary_decision_scores_equal_scikit_learn(client, rows):
    X, digits = rows
    y = digits == 5
    sgd = SGDClassifier(random_state=42, max_iter=50)
    expected = cross_val_predict(sgd, X, y, cv=3, method="decision_function")
    np.testing.assert_array_equal(cross_val_decisions(client, sgd, X, y, _folds(X, y)), expected)
    np.testing.assert_array_equal(cross_val_predictions(client, sgd, X, y, _folds(X, y)), expected > 0)


def test_unseeded_sgd_is_refused():
    with pytest.raises(ValueError, match="seeded"):
        ova_seeds(None, 10)
