"""k-NN grid search with dask-ml at the cost of one neighbour search per fold.

For each cross-validation fold the validation rows' neighbours among that fold's
training rows are found once, for the largest ``n_neighbors`` in the grid, with the
exact blocked k-NN on the cluster. dask-ml's ``GridSearchCV`` then scores every
(n_neighbors, weights) candidate on the cluster with :class:`NeighborVoteClassifier`,
whose ``X`` is a column of row ids into that table: a candidate is a cheap vote, and
there is no train x train graph and no repeated transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.model_selection import ParameterGrid

from mnist_dask.errors import UserError
from mnist_dask.knn import kneighbors, vote


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a grid search: the winner, its mean CV accuracy, and every candidate's scores."""

    best_params: dict[str, Any]
    best_score: float
    cv_results: dict[str, list[Any]]


def grid_search(X: da.Array, y: np.ndarray, param_grid: dict[str, list[Any]] | list[dict[str, list[Any]]],
                cv: int = 5, groups: np.ndarray | None = None, scheduler: Any = None) -> SearchResult:
    """Grid-search k-NN over ``param_grid`` with ``cv`` folds (group folds when ``groups`` is given).

    ``X`` is (n, d) and chunked by rows; folds are unshuffled like scikit-learn's
    ``GridSearchCV(cv=5)`` on a classifier (``StratifiedKFold``; ``GroupKFold`` keeps each group in one fold).
    """
    from dask_ml.model_selection import GridSearchCV

    y = np.asarray(y)
    candidates = list(ParameterGrid(param_grid))
    unknown = {key for c in candidates for key in c} - {"n_neighbors", "weights"}
    if unknown:
        raise UserError(f"param_grid: unknown k-NN parameter {sorted(unknown)[0]!r} (n_neighbors, weights)")
    k_max = max(c.get("n_neighbors", 5) for c in candidates)
    ids = np.arange(len(y)).reshape(-1, 1)
    splitter = GroupKFold(n_splits=cv) if groups is not None else StratifiedKFold(n_splits=cv)
    folds = list(splitter.split(ids, y, groups))

    table_idx, table_dist = fold_neighbors(X, folds, k_max, scheduler)
    voter = NeighborVoteClassifier(neighbor_indices=table_idx, neighbor_distances=table_dist, labels=y)
    search = GridSearchCV(voter, param_grid, cv=folds, refit=False, scheduler=scheduler,
                          return_train_score=False)
    search.fit(ids, y)
    results = {key: _plain(value) for key, value in search.cv_results_.items()}
    best = int(np.argmin(search.cv_results_["rank_test_score"]))  # as scikit-learn's best_index_
    return SearchResult(best_params=dict(results["params"][best]),
                        best_score=float(results["mean_test_score"][best]), cv_results=results)


def fold_neighbors(X: da.Array, folds: list[tuple[np.ndarray, np.ndarray]], k: int,
                   scheduler: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """For every row, its k nearest rows among the training rows of the fold it validates in.

    Returns (indices into X (n, k) int64, euclidean distances (n, k) float64).
    """
    lazy = []
    for train, val in folds:
        if np.any(np.diff(train) < 0) or np.any(np.diff(val) < 0):
            raise ValueError("fold indices must be sorted")
        distances, local = kneighbors(X[val], X[train], k)
        lazy.append((distances, local))
    computed = dask.compute(*lazy, scheduler=scheduler) if scheduler is not None else dask.compute(*lazy)
    n = X.shape[0]
    table_idx = np.full((n, k), -1, dtype=np.int64)
    table_dist = np.full((n, k), np.inf)
    for (train, val), (distances, local) in zip(folds, computed):
        table_idx[val] = train[local]
        table_dist[val] = distances
    return table_idx, table_dist


class NeighborVoteClassifier(ClassifierMixin, BaseEstimator):
    """k-NN vote over precomputed neighbours; ``X`` is a column of row ids into the table.

    Fitting on a fold's training ids and predicting its validation ids gives the same
    predictions as ``KNeighborsClassifier`` fitted on those rows, as long as the table
    was built for that fold (checked: every neighbour used must be a training id).
    """

    def __init__(self, neighbor_indices: np.ndarray | None = None, neighbor_distances: np.ndarray | None = None,
                 labels: np.ndarray | None = None, n_neighbors: int = 5, weights: str = "uniform"):
        self.neighbor_indices = neighbor_indices
        self.neighbor_distances = neighbor_distances
        self.labels = labels
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: np.ndarray, y: np.ndarray) -> NeighborVoteClassifier:
        """Remember which rows are training rows; the neighbours themselves are precomputed."""
        self.train_ids_ = np.asarray(X)[:, 0]
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of the rows ``X[:, 0]`` from their first ``n_neighbors`` neighbours."""
        ids = np.asarray(X)[:, 0]
        if self.n_neighbors > self.neighbor_indices.shape[1]:
            raise ValueError(f"n_neighbors={self.n_neighbors} exceeds the {self.neighbor_indices.shape[1]} precomputed")
        neighbors = self.neighbor_indices[ids, : self.n_neighbors]
        if not np.isin(neighbors, self.train_ids_).all():
            raise ValueError("the neighbour table was not built for this fold's training rows")
        return vote(self.labels[neighbors], self.neighbor_distances[ids, : self.n_neighbors],
                    self.weights, self.classes_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most voted class (ties to the smallest class, like scikit-learn)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _plain(value: Any) -> list[Any]:
    """cv_results_ columns as JSON-ready lists (masked parameter arrays become plain values)."""
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(value, dtype=object).tolist()]
