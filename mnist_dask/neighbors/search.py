"""k-NN grid search with dask-ml at the cost of one neighbour search per fold.

For each cross-validation fold the validation rows' neighbours among that fold's
training rows are found once, for the largest ``n_neighbors`` in the grid, with the
exact k-NN on the cluster (pruned where it pays, with one projection shared by every
fold). dask-ml's ``GridSearchCV`` then scores every (n_neighbors, weights) candidate on
the cluster with :class:`NeighborVoteClassifier`, whose ``X`` is that table (each row's
neighbours' labels and distances): a candidate is a cheap vote, and there is no train x
train graph and no repeated transform. ``knn_best`` uses the same fold search and vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupKFold, ParameterGrid, StratifiedKFold

from mnist_dask.errors import UserError
from mnist_dask.neighbors.knn import kneighbors, vote
from mnist_dask.neighbors.projection import MIN_TRAIN_ROWS, components_for_width, lazy_projection

Fold = tuple[np.ndarray, np.ndarray]  # sorted (training rows, validation rows)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a grid search: the winner, its mean CV accuracy, and every candidate's scores."""

    best_params: dict[str, Any]
    best_score: float
    cv_results: dict[str, list[Any]]


def grid_search(
    X: da.Array,
    y: np.ndarray,
    param_grid: dict[str, list[Any]] | list[dict[str, list[Any]]],
    cv: int = 5,
    groups: np.ndarray | None = None,
    scheduler: Any = None,
) -> SearchResult:
    """Grid-search k-NN over ``param_grid`` with ``cv`` folds (group folds when ``groups`` is given).

    ``X`` is (n, d) and chunked by rows; folds are unshuffled like scikit-learn's
    ``GridSearchCV(cv=5)`` on a classifier (``StratifiedKFold``; ``GroupKFold`` keeps each group in one fold).
    """
    y = np.asarray(y)
    candidates = list(ParameterGrid(param_grid))
    unknown = {key for c in candidates for key in c} - {"n_neighbors", "weights"}
    if unknown:
        raise UserError(f"param_grid: unknown k-NN parameter {sorted(unknown)[0]!r} (n_neighbors, weights)")
    k_max = max(c.get("n_neighbors", 5) for c in candidates)
    problem = search_problem(y, cv, k_max, groups)
    if problem is not None:
        raise UserError(f"grid search: {problem[0]} = {problem[1]}")
    folds = cv_folds(y, cv, groups)

    tables = fold_neighbors(X, folds, k_max, scheduler)
    return vote_search(tables, y, folds, param_grid, scheduler)


def vote_search(
    tables: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    folds: list[Fold],
    param_grid: dict[str, list[Any]] | list[dict[str, list[Any]]],
    scheduler: Any = None,
) -> SearchResult:
    """dask-ml GridSearchCV over (n_neighbors, weights) as votes on precomputed fold neighbours."""
    from dask_ml.model_selection import GridSearchCV

    search = GridSearchCV(
        NeighborVoteClassifier(), param_grid, cv=folds, refit=False, scheduler=scheduler, return_train_score=False
    )
    search.fit(neighbor_table(tables[0], tables[1], y, folds), y)
    results = {key: plain_results(value) for key, value in search.cv_results_.items()}
    best = int(np.argmin(search.cv_results_["rank_test_score"]))  # as scikit-learn's best_index_
    return SearchResult(
        best_params=dict(results["params"][best]),
        best_score=float(results["mean_test_score"][best]),
        cv_results=results,
    )


def cv_folds(y: np.ndarray, cv: int, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train rows, validation rows) of each fold: stratified, or by group when ``groups`` is given."""
    splitter = GroupKFold(n_splits=cv) if groups is not None else StratifiedKFold(n_splits=cv)
    return list(splitter.split(np.zeros((len(y), 1)), y, groups))


def search_problem(y: np.ndarray, cv: int, k_max: int, groups: np.ndarray | None = None) -> tuple[str, str] | None:
    """Why a search with ``cv`` folds and up to ``k_max`` neighbours cannot run on these labels, or None.

    Returns (the parameter at fault: ``cv`` or ``param_grid.n_neighbors``, ``<its value>: <why>``);
    it looks at the labels (and groups) only, so it runs before any neighbour search.
    """
    y = np.asarray(y)
    if cv > len(y):
        return "cv", f"{cv}: more folds than the {len(y)} training rows"
    if groups is not None:
        n_groups = len(np.unique(groups))
        if cv > n_groups:
            return "cv", f"{cv}: more folds than the {n_groups} source images (rows of one image share a fold)"
    else:
        classes, counts = np.unique(y, return_counts=True)
        if cv > counts.min():
            digit = classes[int(np.argmin(counts))]
            return "cv", (
                f"{cv}: stratified folds need at least {cv} rows of each class, "
                f"but class {digit} has {counts.min()} in the training rows"
            )
    smallest = min(len(train) for train, _ in cv_folds(y, cv, groups))
    if k_max > smallest:
        return "param_grid.n_neighbors", f"{k_max}: more neighbours than the {smallest} training rows of a fold"
    return None


def fold_neighbors(
    X: da.Array,
    folds: list[Fold],
    k: int,
    scheduler: Any = None,
    val_chunk: int | None = None,
    train_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For every row, its k nearest rows among the training rows of the fold it validates in.

    Returns (indices into X (n, k) int64, euclidean distances (n, k) float64); rows that
    validate in no fold keep index -1 and distance inf. All folds are one computation, and
    where pruning pays they share one projection, fitted on a sample of X (exactness does
    not depend on which rows it was fitted on). ``val_chunk``/``train_chunk`` rechunk the
    fold's rows (default: as X[rows] comes).
    """
    X = X.rechunk({1: -1})
    m = components_for_width(X.shape[1])
    smallest = min((len(train) for train, _ in folds), default=0)
    projection = lazy_projection(X, m) if m and smallest >= MIN_TRAIN_ROWS else None
    lazy = []
    for train, val in folds:
        if np.any(np.diff(train) < 0) or np.any(np.diff(val) < 0):
            raise ValueError("fold indices must be sorted")
        queries, rows = X[val], X[train]
        queries = queries.rechunk({0: val_chunk}) if val_chunk else queries
        rows = rows.rechunk({0: train_chunk}) if train_chunk else rows
        lazy.append(kneighbors(queries, rows, k, projection=projection))
    computed = dask.compute(*lazy, scheduler=scheduler) if scheduler is not None else dask.compute(*lazy)
    n = X.shape[0]
    table_idx = np.full((n, k), -1, dtype=np.int64)
    table_dist = np.full((n, k), np.inf)
    for (train, val), (distances, local) in zip(folds, computed):
        table_idx[val] = train[local]
        table_dist[val] = distances
    return table_idx, table_dist


def neighbor_table(
    indices: np.ndarray, distances: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Rows of ``[fold, neighbour labels..., neighbour distances...]``: the X the voter reads.

    Row i describes row i's neighbours among the training rows of the fold where it is a
    validation row; dask-ml splits this table by the same folds, so each candidate gets
    exactly the rows it needs and the table is never copied into the estimator. Rows that
    validate in no fold (e.g. augmented copies) keep fold -1, and their never-searched
    neighbour indices (-1) are clipped so that the label lookup stays in range.
    """
    k = indices.shape[1]
    table = np.empty((len(y), 1 + 2 * k))
    table[:, 0] = -1  # rows that validate in no fold (e.g. augmented copies)
    for fold, (_, val) in enumerate(folds):
        table[val, 0] = fold
    table[:, 1 : 1 + k] = y[np.maximum(indices, 0)]
    table[:, 1 + k :] = distances
    return table


class NeighborVoteClassifier(ClassifierMixin, BaseEstimator):
    """k-NN vote over precomputed neighbours; ``X`` rows come from :func:`neighbor_table`.

    Predicting a fold's validation rows after fitting on its training rows gives the
    same predictions as ``KNeighborsClassifier`` fitted on those rows (checked: the rows
    predicted must belong to a fold none of the training rows belong to).
    """

    def __init__(self, n_neighbors: int = 5, weights: str = "uniform"):
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: np.ndarray, y: np.ndarray) -> NeighborVoteClassifier:
        """Remember the classes and which folds the training rows validate in."""
        self.train_folds_ = np.unique(np.asarray(X)[:, 0])
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities from each row's first ``n_neighbors`` neighbours."""
        X = np.asarray(X)
        k_max = (X.shape[1] - 1) // 2
        if self.n_neighbors > k_max:
            raise ValueError(f"n_neighbors={self.n_neighbors} exceeds the {k_max} precomputed neighbours")
        if np.isin(X[:, 0], self.train_folds_).any():
            raise ValueError("rows to predict share a fold with the training rows: their neighbours include themselves")
        labels = X[:, 1 : 1 + self.n_neighbors].astype(np.int64)
        distances = X[:, 1 + k_max : 1 + k_max + self.n_neighbors]
        return vote(labels, distances, self.weights, self.classes_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most voted class (ties to the smallest class, like scikit-learn)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def plain_results(value: Any) -> list[Any]:
    """cv_results_ columns as JSON-ready lists (masked parameter arrays become plain values)."""
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(value, dtype=object).tolist()]
