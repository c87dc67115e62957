"""Exact k-nearest-neighbours on dask arrays, and a scikit-learn style classifier.

The work is split into one task per (test chunk, train chunk) block, combined over the train
chunks, so no task ever holds more than one train chunk.  Two kernels give identical results
(exact squared distances ordered by (distance, global train index), see
:mod:`mnist_dask.neighbors.blocked`):

* pruned (:mod:`mnist_dask.neighbors.pruned`), for wide data with enough train rows: rows are
  projected once per chunk on the training set's leading principal components plus a residual
  norm ('knn-prepare' tasks); a block computes rigorous lower bounds of every distance with one
  narrow GEMM and exact distances only for rows whose bound does not rule them out.  The blocks
  of a test chunk run as chains over the train chunks ('knn-pruned'), each block starting from
  the k best found so far, whose k-th distance prunes the next chunk; chains are merged by a
  tree ('knn-merge');
* plain (:mod:`mnist_dask.neighbors.blocked`): a float32 GEMM over all columns, an exact re-rank
  and a certificate, per block ('knn-block'), merged by a tree ('knn-merge').

scikit-learn leaves the order of equal distances unspecified (its brute force uses an unstable
sort), so on exact ties only the sets of indices agree.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from sklearn.base import BaseEstimator, ClassifierMixin

from mnist_dask.neighbors.blocked import DEFAULT_MARGIN, PAD_INDEX, block_kneighbors, merge_kneighbors
from mnist_dask.neighbors.projection import (
    MIN_TRAIN_ROWS,
    Projection,
    components_for_width,
    fit_projection,
    lazy_projection,
)
from mnist_dask.neighbors.pruned import prepare_rows, pruned_kneighbors

__all__ = [
    "DEFAULT_MARGIN",
    "PAD_INDEX",
    "KNNClassifier",
    "block_kneighbors",
    "kneighbors",
    "merge_kneighbors",
    "pruning_projection",
    "vote",
]

DEFAULT_TRAIN_CHUNK = 10_000  # train rows per block when the training set is numpy
DEFAULT_TEST_CHUNK = 1_000  # test rows per block when the queries are numpy
DEFAULT_SPLIT_EVERY = 8  # fan-in of the tree reduction over train chunks
PARALLEL_CHAINS = 8  # pruned search: at least this many independent chains over all test chunks
MIN_QUERY_CHUNK = 512  # pruned search: query chunks are split down to about this size for more chains
MIN_TRAIN_CHUNK = 20_000  # pruned search: shorter train chunks are merged to this size (fewer, longer blocks)
CHAIN_LAG = 3  # pruned search: how many train chunks the first test chunk may run ahead of the last
WEIGHTS = ("uniform", "distance")
PRUNING = ("auto", "off")

ProjectionArg = Projection | Delayed | Literal["auto"] | None


def kneighbors(
    X_test: da.Array | np.ndarray,
    X_train: da.Array | np.ndarray,
    k: int,
    margin: int = DEFAULT_MARGIN,
    split_every: int = DEFAULT_SPLIT_EVERY,
    projection: ProjectionArg = "auto",
) -> tuple[da.Array, da.Array]:
    """Lazy exact k-NN of every row of X_test among the rows of X_train (2-D, chunked by rows).

    Returns (euclidean distances float64, train indices int64) as dask arrays of shape
    (n_test, k) chunked like X_test's rows.  ``projection``: "auto" prunes where it pays (wide
    rows, enough train rows; the projection is fitted lazily on a sample of X_train), a
    :class:`~mnist_dask.neighbors.projection.Projection` or a dask Delayed of one is used as
    given (so several searches can share one), None searches with the plain kernel.  The
    result does not depend on the projection.
    """
    test = _rows_chunked(X_test, DEFAULT_TEST_CHUNK)
    train = _rows_chunked(X_train, DEFAULT_TRAIN_CHUNK)
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"X_test has {test.shape[1]} features but X_train has {train.shape[1]}")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must be between 1 and the number of train rows ({train.shape[0]}), got {k}")
    chosen = pruning_projection(train, projection)
    chunks = (test.chunks[0], (k,))
    if chosen is not None:  # many short query chunks, each with one long chain over a few long train chunks
        target = max(MIN_QUERY_CHUNK, math.ceil(test.shape[0] / PARALLEL_CHAINS))
        test = test.rechunk({0: target}) if max(test.chunks[0], default=0) > 2 * target else test
        train = train.rechunk({0: MIN_TRAIN_CHUNK}) if max(train.chunks[0]) < MIN_TRAIN_CHUNK // 2 else train
    token = tokenize(test, train, k, margin, split_every, chosen)
    deps: list[Any] = [test, train]
    if chosen is None:
        dsk, roots = _knn_graph(test, train, k, margin, max(2, split_every), token)
    else:
        if isinstance(chosen, Delayed):
            deps.append(chosen)
            projection_key: Any = chosen.key
            dsk = {}
        else:
            if chosen.n_features != train.shape[1]:
                raise ValueError(f"the projection is for {chosen.n_features} features, the rows have {train.shape[1]}")
            projection_key = "knn-projection-" + token
            dsk = {projection_key: chosen}
        roots = _pruned_graph(dsk, test, train, k, margin, max(2, split_every), token, projection_key)
    work = (test.chunks[0], (k,))
    dist = _result_array(dsk, roots, "knn-distances-" + token, _euclidean_part, deps, work, np.float64)
    ind = _result_array(dsk, roots, "knn-indices-" + token, _index_part, deps, work, np.int64)
    if work != chunks:
        dist, ind = dist.rechunk(chunks), ind.rechunk(chunks)
    return dist, ind


def pruning_projection(train: da.Array, projection: ProjectionArg) -> Projection | Delayed | None:
    """The projection a search of these train rows uses: "auto" fits one lazily where pruning pays."""
    if isinstance(projection, str):
        if projection != "auto":
            raise ValueError(f"projection must be 'auto', None or a Projection, got {projection!r}")
        m = components_for_width(train.shape[1])
        if m == 0 or train.shape[0] < MIN_TRAIN_ROWS:
            return None
        return lazy_projection(train, m)
    return projection


def vote(neighbor_labels: np.ndarray, distances: np.ndarray, weights: str, classes: np.ndarray) -> np.ndarray:
    """Class probabilities from the neighbours' labels, exactly as scikit-learn's predict_proba.

    'distance' weighs by 1/d, and a row with a zero distance gives weight 1 to those
    neighbours and 0 to the others; classes must be sorted (like ``classes_``).
    """
    votes = _votes(neighbor_labels, distances, weights, classes)
    return votes / votes.sum(axis=1)[:, np.newaxis]


class KNNClassifier(ClassifierMixin, BaseEstimator):
    """Exact k-NN classifier on numpy or dask arrays (scikit-learn compatible), identical to brute force.

    Dask input gives lazy dask output; numpy input is computed with the current dask
    scheduler (a distributed Client when one is active).  Predictions, probabilities and
    neighbours equal ``KNeighborsClassifier(algorithm="brute")``'s, ties included.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours that vote.
    weights : {"uniform", "distance"}, default="uniform"
        Equal votes, or votes weighted by inverse distance (an exact match takes the vote alone),
        as scikit-learn.
    train_chunk_size : int or None, default=None
        Training rows per block of the search; None keeps the chunks of dask input (numpy
        input is cut into blocks of a few thousand rows).
    margin : int, default=DEFAULT_MARGIN
        Extra candidates kept per query by the plain kernel's float32 GEMM before the exact
        integer re-ranking; the pruned kernel's bounds make it unnecessary there.
    pruning : {"auto", "off"}, default="auto"
        "auto" fits a projection in ``fit`` where it pays (see
        :func:`mnist_dask.neighbors.projection.components_for_width`) and skips the training
        rows whose proven lower bound exceeds the current k-th distance; "off" always runs
        the plain blocked kernel. Results are the same either way.

    Attributes
    ----------
    X_fit_ : dask.array.Array
        The training rows, flattened to 2-D.
    y_fit_ : numpy.ndarray
        Their labels.
    classes_ : numpy.ndarray
        The sorted distinct labels.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 0], [0, 1], [5, 5], [6, 5]], dtype=np.uint8)
    >>> KNNClassifier(n_neighbors=1).fit(X, [0, 0, 1, 1]).predict(np.array([[1, 1], [5, 6]]))
    array([0, 1])
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        weights: str = "uniform",
        train_chunk_size: int | None = None,
        margin: int = DEFAULT_MARGIN,
        pruning: str = "auto",
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.train_chunk_size = train_chunk_size
        self.margin = margin
        self.pruning = pruning

    def fit(self, X: np.ndarray | da.Array, y: np.ndarray | da.Array) -> KNNClassifier:
        """Store the training rows (flattened lazily to 2-D) and their labels; fit the pruning projection.

        The projection (a covariance of a few thousand sampled rows and an eigendecomposition)
        is computed now, on the current scheduler for dask input.
        """
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.pruning not in PRUNING:
            raise ValueError(f"pruning must be one of {PRUNING}, got {self.pruning!r}")
        if int(self.n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be at least 1, got {self.n_neighbors}")
        X = _flattened(X)
        y = np.asarray(y.compute() if isinstance(y, da.Array) else y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with {X.shape[0]} labels, got shape {y.shape}")
        self.X_fit_ = X
        self.y_fit_ = y
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        m = components_for_width(X.shape[1]) if self.pruning == "auto" else 0
        self.projection_ = fit_projection(X, m) if m and X.shape[0] >= MIN_TRAIN_ROWS else None
        return self

    def kneighbors(
        self, X: np.ndarray | da.Array, n_neighbors: int | None = None
    ) -> tuple[np.ndarray, np.ndarray] | tuple[da.Array, da.Array]:
        """Euclidean distances and train indices of the nearest neighbours of each row of X."""
        dist, ind = self._lazy_kneighbors(X, n_neighbors)
        return (dist, ind) if isinstance(X, da.Array) else dask.compute(dist, ind)

    @overload
    def predict_proba(self, X: da.Array) -> da.Array: ...
    @overload
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, X: np.ndarray | da.Array) -> np.ndarray | da.Array:
        """Class probabilities (columns ordered like classes_), as scikit-learn computes them."""
        proba = self._map_neighbors(X, _proba_block, ((len(self.classes_),),), np.float64)
        return proba if isinstance(X, da.Array) else _compute(proba)

    @overload
    def predict(self, X: da.Array) -> da.Array: ...
    @overload
    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def predict(self, X: np.ndarray | da.Array) -> np.ndarray | da.Array:
        """Most voted class of each row; ties go to the smallest class, as in scikit-learn."""
        labels = self._map_neighbors(X, _predict_block, (), self.classes_.dtype)
        return labels if isinstance(X, da.Array) else _compute(labels)

    def _lazy_kneighbors(self, X: np.ndarray | da.Array, n_neighbors: int | None) -> tuple[da.Array, da.Array]:
        """The dask (distances, indices) of X against the fitted rows."""
        k = int(self.n_neighbors if n_neighbors is None else n_neighbors)
        return kneighbors(_flattened(X), self._train_rows(), k, margin=int(self.margin), projection=self.projection_)

    def _train_rows(self) -> da.Array:
        """The fitted rows as a dask array chunked by train_chunk_size (or as given)."""
        size = self.train_chunk_size
        if isinstance(self.X_fit_, da.Array):
            return self.X_fit_ if size is None else self.X_fit_.rechunk({0: size})
        return da.from_array(self.X_fit_, chunks=(size or DEFAULT_TRAIN_CHUNK, -1))

    def _map_neighbors(self, X, func, extra_chunks: tuple, dtype) -> da.Array:
        """Apply a per-chunk voting function to the lazy neighbours of X."""
        dist, ind = self._lazy_kneighbors(X, None)
        drop = () if extra_chunks else (1,)
        chunks = (dist.chunks[0], *extra_chunks)
        return da.map_blocks(
            func,
            ind,
            dist,
            chunks=chunks,
            drop_axis=drop,
            dtype=dtype,
            y=self.y_fit_,
            weights=self.weights,
            classes=self.classes_,
        )


def _compute(array: da.Array) -> np.ndarray:
    """Compute numpy-path results; on local threads, cap BLAS at one thread per task.

    Each task already runs on its own core, so a multi-threaded GEMM inside it would
    oversubscribe the machine (measured: 23% slower on 2 cores). Distributed workers
    get the same effect from their nanny's OMP/OPENBLAS_NUM_THREADS=1.
    """
    from distributed import default_client

    try:
        default_client()
    except ValueError:  # no distributed client: the local threaded scheduler runs the blocks
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return array.compute()
    return array.compute()


# ----------------------------------------------------------------------------- dask graph


def _knn_graph(test: da.Array, train: da.Array, k: int, margin: int, split_every: int, token: str):
    """Block and tree-merge tasks; returns the graph and the final task key per test chunk."""
    offsets = np.concatenate([[0], np.cumsum(train.chunks[0])[:-1]]).tolist()
    block, merge = "knn-block-" + token, "knn-merge-" + token
    dsk: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    roots: list[tuple[Any, ...]] = []
    for i in range(len(test.chunks[0])):
        level: list[tuple[Any, ...]] = [(block, i, j) for j in range(len(offsets))]
        for j, key in enumerate(level):
            dsk[key] = (block_kneighbors, (test.name, i, 0), (train.name, j, 0), offsets[j], k, margin)
        roots.append(_merge_tree(dsk, level, merge, i, split_every))
    return dsk, roots


def _pruned_graph(
    dsk: dict, test: da.Array, train: da.Array, k: int, margin: int, split_every: int, token: str, projection_key: Any
) -> list[tuple[Any, ...]]:
    """Prepare, chained pruned-block and tree-merge tasks (added to dsk); returns each test chunk's final key.

    Block (i, j) takes block (i, j-1)'s k best as its prior; it also waits for block (i-1, j)
    (block (0, j) for block (last, j - CHAIN_LAG)), so the test chunks' chains move through
    the train chunks together; train chunk j is prepared only after block (last, j - CHAIN_LAG - 1)
    is done. So only about CHAIN_LAG + 2 prepared train chunks per chain are alive at once,
    whatever order the scheduler picks.
    """
    offsets = np.concatenate([[0], np.cumsum(train.chunks[0])[:-1]]).tolist()
    prep_test, prep_train = "knn-prepare-query-" + token, "knn-prepare-train-" + token
    block, merge = "knn-pruned-" + token, "knn-merge-" + token
    n_test = len(test.chunks[0])
    chains = _chains(len(offsets), n_test)
    for chain in chains:
        for j in chain:
            after = [(block, n_test - 1, j - CHAIN_LAG - 1)] if j - CHAIN_LAG - 1 >= chain.start else []
            dsk[(prep_train, j)] = (_prepare_task, (train.name, j, 0), projection_key, "train", *after)
    roots: list[tuple[Any, ...]] = []
    for i in range(n_test):
        dsk[(prep_test, i)] = (prepare_rows, (test.name, i, 0), projection_key, "query")
        level: list[tuple[Any, ...]] = []
        for chain in chains:
            previous = None
            for j in chain:
                gate = (block, i - 1, j) if i else (block, n_test - 1, j - CHAIN_LAG)
                gates = [gate] if gate[1] != i and gate[2] >= chain.start else []
                key = (block, i, j)
                dsk[key] = (_pruned_task, (prep_test, i), (prep_train, j), offsets[j], k, margin, previous, *gates)
                previous = key
            level.append(key)
        roots.append(_merge_tree(dsk, level, merge, i, split_every))
    return roots


def _prepare_task(rows: np.ndarray, projection: Projection, side: str, *gates: object) -> Any:
    """prepare_rows (the gates only order the tasks)."""
    return prepare_rows(rows, projection, side)


def _pruned_task(
    query: Any, train: Any, offset: int, k: int, margin: int, prior: Any, *gates: object
) -> tuple[np.ndarray, np.ndarray]:
    """One pruned block (the gates only order the tasks)."""
    return pruned_kneighbors(query, train, offset, k, margin, prior)


def _chains(n_train: int, n_test: int) -> list[range]:
    """Train chunks split into contiguous chains, enough for PARALLEL_CHAINS chains over all test chunks."""
    count = min(n_train, max(1, math.ceil(PARALLEL_CHAINS / n_test)))
    bounds = np.linspace(0, n_train, count + 1).round().astype(int)
    return [range(bounds[c], bounds[c + 1]) for c in range(count)]


def _merge_tree(dsk: dict, level: list[tuple[Any, ...]], merge: str, i: int, split_every: int) -> tuple[Any, ...]:
    """Tree-merge tasks over one test chunk's partial results (added to dsk); returns the root key."""
    depth = 0
    while len(level) > 1:
        groups = [level[g : g + split_every] for g in range(0, len(level), split_every)]
        level = [(merge, i, depth, g) for g in range(len(groups))]
        for key, group in zip(level, groups):
            dsk[key] = (_merge_all, *group)
        depth += 1
    return level[0]


def _result_array(dsk, roots, name, getter, deps, chunks, dtype) -> da.Array:
    """A dask array whose chunk i is getter(result of roots[i])."""
    layer = dict(dsk)
    layer.update({(name, i, 0): (getter, root) for i, root in enumerate(roots)})
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    return da.Array(graph, name, chunks=chunks, dtype=dtype)


def _merge_all(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Merge any number of block results (one tree node)."""
    result = parts[0]
    for part in parts[1:]:
        result = merge_kneighbors(result, part)
    return result


def _euclidean_part(result: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Euclidean distances (sqrt of the exact squared ones), as scikit-learn returns."""
    return np.sqrt(result[0])


def _index_part(result: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Global train indices."""
    return result[1]


def _rows_chunked(x: da.Array | np.ndarray, default_rows: int) -> da.Array:
    """A 2-D dask array chunked along rows only (numpy is wrapped)."""
    array = x if isinstance(x, da.Array) else da.from_array(np.asarray(x), chunks=(default_rows, -1))
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array (samples, features), got shape {array.shape}")
    return array.rechunk({1: -1}) if len(array.chunks[1]) > 1 else array


def _flattened(X: np.ndarray | da.Array) -> np.ndarray | da.Array:
    """Samples as rows: (n, h, w) images become (n, h*w), lazily for dask."""
    if not isinstance(X, da.Array):
        X = np.asarray(X)
    if X.ndim == 2:
        return X
    if X.ndim < 2:
        raise ValueError(f"expected samples as rows, got shape {X.shape}")
    if isinstance(X, da.Array):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X.reshape(X.shape[0], -1)


# ----------------------------------------------------------------------------- voting


def _votes(neighbor_labels: np.ndarray, distances: np.ndarray, weights: str, classes: np.ndarray) -> np.ndarray:
    """Unnormalised class votes, accumulated neighbour by neighbour like scikit-learn."""
    n, k = neighbor_labels.shape
    positions = np.searchsorted(classes, neighbor_labels)
    w = _neighbor_weights(distances, weights)
    votes = np.zeros((n, len(classes)))
    rows = np.arange(n)
    for i in range(k):
        votes[rows, positions[:, i]] += w[:, i]
    return votes


def _neighbor_weights(distances: np.ndarray, weights: str) -> np.ndarray:
    """scikit-learn's _get_weights: ones, or 1/d with zero-distance rows as 1 for d == 0 else 0."""
    if weights == "uniform":
        return np.ones(distances.shape)
    if weights != "distance":
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    with np.errstate(divide="ignore"):
        w = 1.0 / distances
    inf_mask = np.isinf(w)
    inf_row = np.any(inf_mask, axis=1)
    w[inf_row] = inf_mask[inf_row]
    return w


def _proba_block(ind: np.ndarray, dist: np.ndarray, y: np.ndarray, weights: str, classes: np.ndarray) -> np.ndarray:
    """predict_proba for one chunk of neighbours."""
    return vote(y[ind], dist, weights, classes)


def _predict_block(ind: np.ndarray, dist: np.ndarray, y: np.ndarray, weights: str, classes: np.ndarray) -> np.ndarray:
    """predict for one chunk: argmax of the raw votes (first, i.e. smallest, class on ties)."""
    return classes[np.argmax(_votes(y[ind], dist, weights, classes), axis=1)]
