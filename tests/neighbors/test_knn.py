"""Exact blocked k-NN: agreement with scikit-learn on real MNIST, ties, exactness, dask, sklearn API."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from mnist_dask.neighbors.knn import KNNClassifier, block_kneighbors, kneighbors, merge_kneighbors, vote

N_TEST, N_TRAIN, TRAIN_CHUNK = 2_000, 12_000, 4_000


@pytest.fixture(scope="module")
def subset(mnist):
    """A real MNIST subset, flattened: 2,000 test rows against 12,000 train rows."""
    return {
        "X_train": mnist["train_images"][:N_TRAIN].reshape(N_TRAIN, -1),
        "y_train": mnist["train_labels"][:N_TRAIN],
        "X_test": mnist["test_images"][:N_TEST].reshape(N_TEST, -1),
    }


def reference_kneighbors(X_test, X_train, k):
    """Brute force, exact: integers via float64 (every value stays below 2**53), floats as
    the float64 sum((a - b)**2); ordered by (squared distance, index)."""
    if X_train.dtype.kind in "biu":
        a, b = X_test.astype(np.float64), X_train.astype(np.float64)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        assert 4.0 * a.shape[1] * max(a.max(), b.max()) ** 2 < 2.0**53
    else:
        sq = np.stack([((X_train - row) ** 2).sum(axis=-1) for row in X_test])
    index = np.broadcast_to(np.arange(X_train.shape[0]), sq.shape)
    order = np.lexsort((index, sq), axis=-1)[:, :k]
    return np.take_along_axis(sq, order, axis=1).astype(np.float64), order


def sorted_by_distance_then_index(dist, ind):
    """scikit-learn's indices with equal distances put in index order (its tie order is unspecified)."""
    order = np.lexsort((ind, dist), axis=-1)
    return np.take_along_axis(ind, order, axis=1)


# ----------------------------------------------------------------------------- real MNIST vs scikit-learn


@pytest.mark.integration
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_matches_sklearn_brute_on_real_mnist(subset, k, weights):
    ours = KNNClassifier(n_neighbors=k, weights=weights, train_chunk_size=TRAIN_CHUNK)
    ours.fit(subset["X_train"], subset["y_train"])
    theirs = KNeighborsClassifier(n_neighbors=k, weights=weights, algorithm="brute")
    theirs.fit(subset["X_train"], subset["y_train"])
    X = subset["X_test"]
    lazy_X = da.from_array(X, chunks=(500, -1))

    # one graph, so the neighbours are computed once for all three answers
    (dist, ind), proba, labels = dask.compute(ours.kneighbors(lazy_X), ours.predict_proba(lazy_X), ours.predict(lazy_X))
    their_dist, their_ind = theirs.kneighbors(X)
    np.testing.assert_array_equal(dist, their_dist)
    np.testing.assert_array_equal(ind, sorted_by_distance_then_index(their_dist, their_ind))
    np.testing.assert_array_equal(proba, theirs.predict_proba(X))
    np.testing.assert_array_equal(labels, theirs.predict(X))


@pytest.mark.integration
def test_accepts_images_and_scores_like_sklearn(mnist):
    images, labels = mnist["train_images"][:3_000], mnist["train_labels"][:3_000]
    test_images, test_labels = mnist["test_images"][:500], mnist["test_labels"][:500]
    ours = KNNClassifier(n_neighbors=3).fit(images, labels)
    theirs = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(images.reshape(3_000, -1), labels)

    assert ours.n_features_in_ == 784
    assert ours.X_fit_.shape == (3_000, 784)
    assert ours.score(test_images, test_labels) == theirs.score(test_images.reshape(500, -1), test_labels)


# ----------------------------------------------------------------------------- dask graph


@pytest.mark.integration
def test_dask_input_gives_lazy_results_chunked_like_the_queries(subset):
    X_test = da.from_array(subset["X_test"][:600], chunks=(250, -1))
    X_train = da.from_array(subset["X_train"][:7_000], chunks=(1_000, -1))

    plain = kneighbors(X_test, X_train, k=5, split_every=2, projection=None)  # 7 train chunks: a 3-level tree
    pruned = kneighbors(X_test, X_train, k=5, split_every=2)  # 784 columns, 7,000 rows: pruned

    want_sq, want_ind = reference_kneighbors(subset["X_test"][:600], subset["X_train"][:7_000], 5)
    for (dist, ind), names in ((plain, {"knn-block", "knn-merge"}), (pruned, {"knn-pruned", "knn-prepare-train"})):
        assert isinstance(dist, da.Array) and isinstance(ind, da.Array)
        assert dist.chunks == ind.chunks == ((250, 250, 100), (5,))
        prefixes = {key[0].rsplit("-", 1)[0] for key in dict(dist.__dask_graph__())}
        assert names <= prefixes
        dist, ind = dask.compute(dist, ind, scheduler="threads")
        np.testing.assert_array_equal(ind, want_ind)
        np.testing.assert_array_equal(dist, np.sqrt(want_sq))


def test_train_chunks_smaller_than_k_are_padded_then_merged_away():
    rng = np.random.default_rng(0)
    X_train = rng.integers(0, 50, size=(9, 6), dtype=np.uint8)
    X_test = rng.integers(0, 50, size=(4, 6), dtype=np.uint8)

    block_sq, block_ind = block_kneighbors(X_test, X_train[:2], train_offset=7, k=4)
    dist, ind = dask.compute(
        *kneighbors(da.from_array(X_test, chunks=(3, -1)), da.from_array(X_train, chunks=(2, -1)), k=4)
    )

    assert np.isinf(block_sq[:, 2:]).all() and (block_ind[:, :2] >= 7).all()
    want_sq, want_ind = reference_kneighbors(X_test, X_train, 4)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(dist, np.sqrt(want_sq))


def test_k_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match="k must be between 1 and"):
        kneighbors(np.zeros((2, 3)), np.zeros((4, 3)), k=5)


@pytest.mark.integration
def test_runs_on_a_distributed_local_cluster(subset):
    X_train = da.from_array(subset["X_train"][:6_000], chunks=(2_000, -1))
    X_test = da.from_array(subset["X_test"][:1_000], chunks=(500, -1))
    model = KNNClassifier(n_neighbors=4, weights="distance").fit(X_train, subset["y_train"][:6_000])
    theirs = KNeighborsClassifier(n_neighbors=4, weights="distance", algorithm="brute")
    want = theirs.fit(subset["X_train"][:6_000], subset["y_train"][:6_000]).predict(subset["X_test"][:1_000])

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            lazy = model.predict(X_test)
            from_dask = client.compute(lazy).result()
            from_numpy = model.predict(subset["X_test"][:1_000])  # uses the active client

    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(from_dask, want)
    np.testing.assert_array_equal(from_numpy, want)


# ----------------------------------------------------------------------------- ties


@pytest.mark.integration
@pytest.mark.parametrize("k", [4, 5])
def test_duplicated_training_rows_in_different_chunks_rank_lower_index_first(subset, k):
    rows = subset["X_train"][:1_500]
    X_train = np.concatenate([rows, rows])  # row i and row i + 1500 are equal, 1500 apart
    X_test = subset["X_test"][:300]
    model = KNNClassifier(n_neighbors=k, train_chunk_size=1_000).fit(X_train, np.zeros(3_000, dtype=int))

    dist, ind = model.kneighbors(X_test)

    assert (ind[:, 0::2] < 1_500).all() and (ind[:, 1::2] == ind[:, 0:-1:2] + 1_500).all()
    _want_sq, want_ind = reference_kneighbors(X_test, X_train, k)
    np.testing.assert_array_equal(ind, want_ind)
    their_dist, their_ind = (
        KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X_train, np.zeros(3_000)).kneighbors(X_test)
    )
    np.testing.assert_array_equal(dist, their_dist)
    if k % 2 == 0:  # no tie straddles the k-th place, so the sets agree; only the order may not
        np.testing.assert_array_equal(np.sort(ind, axis=1), np.sort(their_ind, axis=1))


def test_merging_equal_distances_keeps_the_lower_index():
    left = (np.array([[1.0, 4.0, 9.0]]), np.array([[30, 31, 32]]))
    right = (np.array([[1.0, 4.0, 4.0]]), np.array([[2, 7, 5]]))

    dist, ind = merge_kneighbors(left, right)

    np.testing.assert_array_equal(dist, [[1.0, 1.0, 4.0]])
    np.testing.assert_array_equal(ind, [[2, 30, 5]])


@pytest.mark.integration
def test_query_equal_to_training_rows_takes_all_distance_weight(subset):
    X_train = np.concatenate([subset["X_train"][:2_000], subset["X_train"][:1]])  # row 0 twice
    y_train = np.concatenate([subset["y_train"][:2_000], [(subset["y_train"][0] + 1) % 10]])
    X_test = subset["X_train"][:50]  # every query sits on a training row
    ours = KNNClassifier(n_neighbors=5, weights="distance", train_chunk_size=700).fit(X_train, y_train)
    theirs = KNeighborsClassifier(n_neighbors=5, weights="distance", algorithm="brute").fit(X_train, y_train)

    proba = ours.predict_proba(X_test)

    np.testing.assert_array_equal(proba, theirs.predict_proba(X_test))
    np.testing.assert_array_equal(ours.predict(X_test), theirs.predict(X_test))
    labels = sorted({int(y_train[0]), int(y_train[-1])})
    assert proba[0, labels[0]] == proba[0, labels[1]] == 0.5  # two zero distances, two labels
    assert ours.predict(X_test[:1])[0] == labels[0]
    np.testing.assert_array_equal(proba[1:], np.eye(10)[y_train[1:50]])


def test_vote_tie_between_classes_goes_to_the_smallest_class():
    X_train = np.array([[1.0], [-1.0], [2.0], [-2.0], [9.0]])
    y_train = np.array([7, 3, 7, 3, 5])
    X_test = np.array([[0.0]])  # distances 1, 1, 2, 2: two votes each for 3 and 7

    for weights in ("uniform", "distance"):
        ours = KNNClassifier(n_neighbors=4, weights=weights).fit(X_train, y_train)
        theirs = KNeighborsClassifier(n_neighbors=4, weights=weights, algorithm="brute").fit(X_train, y_train)
        np.testing.assert_array_equal(ours.predict_proba(X_test), [[0.5, 0.0, 0.5]])
        np.testing.assert_array_equal(ours.predict_proba(X_test), theirs.predict_proba(X_test))
        assert ours.predict(X_test)[0] == theirs.predict(X_test)[0] == 3


def test_vote_gives_zero_distance_neighbours_weight_one_and_others_zero():
    labels = np.array([[2, 0, 2, 1], [0, 1, 1, 2]])
    distances = np.array([[0.0, 0.0, 3.0, 4.0], [1.0, 2.0, 4.0, 4.0]])

    proba = vote(labels, distances, "distance", np.array([0, 1, 2]))

    np.testing.assert_array_equal(proba[0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(proba[1], np.array([1.0, 0.75, 0.25]) / 2.0, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------- exactness guard


def test_exact_where_float32_cannot_tell_large_integers_apart():
    rng = np.random.default_rng(1)
    X_train = (60_000 - rng.integers(0, 4, size=(3_000, 784))).astype(np.uint16)
    X_test = (60_000 - rng.integers(0, 4, size=(40, 784))).astype(np.uint16)

    sq, ind = block_kneighbors(X_test, X_train, train_offset=0, k=5)

    want_sq, want_ind = reference_kneighbors(X_test, X_train, 5)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(sq, want_sq)
    assert not np.array_equal(float32_kneighbors(X_test, X_train, 5), want_ind)  # the guard was needed


def test_exact_reranking_fixes_float32_order_inside_a_tight_cluster():
    rng = np.random.default_rng(2)
    centres = rng.integers(4_000, 5_000, size=(20, 784))
    X_train = np.concatenate([c + rng.integers(0, 2, size=(12, 784)) for c in centres]).astype(np.uint16)
    X_test = (centres + rng.integers(0, 2, size=centres.shape)).astype(np.uint16)

    sq, ind = block_kneighbors(X_test, X_train, train_offset=100, k=6, margin=8)

    want_sq, want_ind = reference_kneighbors(X_test, X_train, 6)
    np.testing.assert_array_equal(ind, want_ind + 100)
    np.testing.assert_array_equal(sq, want_sq)
    assert not np.array_equal(float32_kneighbors(X_test, X_train, 6), want_ind)


@pytest.mark.parametrize(
    "dtype, low, high",
    [(np.bool_, 0, 2), (np.uint8, 240, 256), (np.int8, -128, -110), (np.int16, 280, 301), (np.int16, 980, 1001)],
)
def test_skipping_zero_columns_and_grouped_float32_dots_stay_exact(dtype, low, high):
    # columns zero in every test row, or in every train row, are left out of the GEMM, and
    # small integers are dotted exactly in float32 column groups (int16 up to 300: groups of
    # 186 columns; up to 1000: too narrow, float64 instead); every path must stay exact.
    # Values near the dtype's extreme make the partial sums as large as the bound allows.
    rng = np.random.default_rng(7)
    X_train = rng.integers(low, high, size=(700, 300)).astype(dtype)
    X_test = rng.integers(low, high, size=(50, 300)).astype(dtype)
    X_train[:, :40] = 0
    X_test[:, 40:90] = 0
    X_test[:3] = X_train[[5, 9, 600]]  # exact matches: distance zero

    sq, ind = block_kneighbors(X_test, X_train, train_offset=0, k=5, margin=1)

    want_sq, want_ind = reference_kneighbors(X_test, X_train, 5)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(sq, want_sq)


@pytest.mark.parametrize("bound", [1, 255, 300, 1000])
def test_grouped_float32_integer_dots_are_exact_at_the_largest_values(bound):
    from mnist_dask.neighbors.blocked import _exact_float32_width, _exact_integer_dots

    rng = np.random.default_rng(bound)
    X_train = (bound - rng.integers(0, 2, size=(40, 2_000))).astype(np.int32)  # odd and even sums
    X_test = (bound - rng.integers(0, 2, size=(30, 2_000))).astype(np.int32)
    cand = rng.integers(0, 40, size=(30, 7))
    width = _exact_float32_width(bound)
    if width == 0:
        assert bound * bound * 64 > 2**24  # too wide a product for a useful group: float64 is used
        return

    dots = _exact_integer_dots(X_test, X_train, cand, width)

    want = np.einsum("scd,sd->sc", X_train[cand].astype(np.int64), X_test.astype(np.int64))
    np.testing.assert_array_equal(dots, want)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_float_input_matches_float64_brute_force_bit_for_bit(mnist, offset):
    X_train = mnist["train_images"][:2_500].reshape(2_500, -1) / 255.0 + offset
    X_test = mnist["test_images"][:60].reshape(60, -1) / 255.0 + offset

    sq, ind = dask.compute(*kneighbors(X_test, da.from_array(X_train, chunks=(1_000, -1)), k=4))

    want_sq, want_ind = reference_kneighbors(X_test, X_train, 4)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(sq, np.sqrt(want_sq))


def float32_kneighbors(X_test, X_train, k):
    """What a plain float32 GEMM ranking would return (used to show the guard matters)."""
    a, b = X_test.astype(np.float32), X_train.astype(np.float32)
    sq = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.argsort(sq, axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------- scikit-learn API


def test_clone_keeps_parameters_and_drops_fitted_state():
    model = KNNClassifier(n_neighbors=4, weights="distance", train_chunk_size=3_000, margin=12)
    model.fit(np.eye(6), np.arange(6))

    copy = clone(model)

    assert copy.get_params() == {
        "n_neighbors": 4,
        "weights": "distance",
        "train_chunk_size": 3_000,
        "margin": 12,
        "pruning": "auto",
    }
    assert not hasattr(copy, "X_fit_")


@pytest.mark.integration
def test_cross_val_score_equals_sklearn(subset):
    X, y = subset["X_train"][:3_000], subset["y_train"][:3_000]

    ours = cross_val_score(KNNClassifier(n_neighbors=3, weights="distance", train_chunk_size=1_000), X, y, cv=3)
    theirs = cross_val_score(KNeighborsClassifier(n_neighbors=3, weights="distance", algorithm="brute"), X, y, cv=3)

    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("query_dtype", [np.int64, np.uint32, np.int16, np.float32])
def test_uint8_training_rows_answer_queries_of_other_dtypes_like_sklearn(query_dtype):
    # a regression: int64 queries (numpy's default) against uint8 training rows failed in the int32 norm
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, size=(300, 50)).astype(np.uint8)
    y = rng.integers(0, 3, size=300)
    queries = rng.integers(0, 256, size=(40, 50)).astype(query_dtype)
    ours = KNNClassifier(n_neighbors=3).fit(X, y).predict(queries)
    theirs = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(X, y).predict(queries)
    np.testing.assert_array_equal(ours, theirs)
