"""Pruned exact k-NN: identical neighbours to brute force on real MNIST variants, adversarial and random data."""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_dask.neighbors import compiled, knn, pruned
from mnist_dask.neighbors.knn import KNNClassifier, kneighbors
from mnist_dask.neighbors.projection import (
    Projection,
    components_for_width,
    fit_projection,
    fit_projection_sample,
    make_projection,
    project_rows,
)
from mnist_dask.neighbors.pruned import prepare_rows, pruned_kneighbors
from mnist_dask.transforms import kernels


def brute_force(X_test: np.ndarray, X_train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared distances and indices by (distance, index): integers via float64 (exact below
    2**53), floats as the float64 sum((a - b)**2) row by row (the kernels' definition)."""
    if X_train.dtype.kind in "biu" and X_test.dtype.kind in "biu":
        a, b = X_test.astype(np.float64), X_train.astype(np.float64)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    else:
        b = X_train.astype(np.float64)
        sq = np.stack([((b - row) ** 2).sum(axis=-1) for row in X_test.astype(np.float64)])
    index = np.broadcast_to(np.arange(X_train.shape[0]), sq.shape)
    order = np.lexsort((index, sq), axis=-1)[:, :k]
    return np.take_along_axis(sq, order, axis=1), order


def search(X_test, X_train, k, projection, train_chunk, test_chunk=None, split_every=8):
    """kneighbors through the dask graph (threads): euclidean distances and indices."""
    dist, ind = dask.compute(
        *kneighbors(
            da.from_array(X_test, chunks=(test_chunk or len(X_test), -1)),
            da.from_array(X_train, chunks=(train_chunk, -1)),
            k,
            projection=projection,
            split_every=split_every,
        ),
        scheduler="threads",
    )
    return dist, ind


def assert_same_as_brute_force(X_test, X_train, k, dist, ind, squared=False):
    """Same indices and, bit for bit, the same (squared or euclidean) distances as brute force."""
    want_sq, want_ind = brute_force(X_test, X_train, k)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(dist, want_sq if squared else np.sqrt(want_sq))


def small_steps(step: int = 700, slab: int = 97, dense_min: int | None = None) -> ExitStack:
    """Shrink the kernel's steps and slabs so that small inputs cross many of them."""
    stack = ExitStack()
    stack.enter_context(mock.patch.object(pruned, "STEP_ROWS", step))
    stack.enter_context(mock.patch.object(pruned, "SLAB_ROWS", slab))
    if dense_min is not None:
        stack.enter_context(mock.patch.object(pruned, "DENSE_MIN_ROWS", dense_min))
    return stack


def compiled_distances(use: bool):
    """Verify surviving pairs with the compiled loop (True) or with numpy (False)."""
    return mock.patch.object(pruned, "USE_COMPILED", use)


def test_compiled_and_numpy_pair_distances_agree_on_every_integer_dtype():
    rng = np.random.default_rng(2)
    for dtype, high in ((np.uint8, 256), (np.int16, 3000), (np.uint16, 400), (np.int64, 10**6), (np.bool_, 2)):
        X_train = rng.integers(0, high, size=(400, 300)).astype(dtype)
        X_test = rng.integers(0, high, size=(20, 300)).astype(dtype)
        projection = fit_projection(X_train, 12)
        query, train = prepare_rows(X_test, projection, "query"), prepare_rows(X_train, projection, "train")
        results = []
        for use in [True, False] if compiled.available() else [False]:
            with compiled_distances(use):
                results.append(pruned_kneighbors(query, train, 0, 5, 3))
        for sq, ind in results:
            assert_same_as_brute_force(X_test, X_train, 5, sq, ind, squared=True)


# ----------------------------------------------------------------------------- real MNIST variants


@pytest.fixture(scope="module")
def images(mnist):
    """6,000 training and 300 test images of real MNIST."""
    return mnist["train_images"][:6_000], mnist["test_images"][:300]


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@pytest.mark.integration
@pytest.mark.parametrize("k", [1, 4, 10])
def test_raw_mnist_identical_to_brute_force_across_chains_and_steps(images, k):
    train, test = flat(images[0]), flat(images[1])
    projection = fit_projection(train, components_for_width(784))
    stats: dict[str, int] = {}
    chains = mock.patch.multiple(knn, PARALLEL_CHAINS=4, MIN_TRAIN_CHUNK=1_000)
    with small_steps(step=1_000, slab=128), chains:
        dist, ind = search(test, train, k, projection, train_chunk=1_500, test_chunk=150)  # 2 chains of 2 chunks
        sq2, i2 = pruned_kneighbors(
            prepare_rows(test, projection, "query"), prepare_rows(train, projection, "train"), 0, k, 8, stats=stats
        )
    assert_same_as_brute_force(test, train, k, dist, ind)
    np.testing.assert_array_equal(i2, ind)
    np.testing.assert_array_equal(np.sqrt(sq2), dist)
    assert stats["pairs"] < 0.1 * train.shape[0] * test.shape[0]  # it did prune


@pytest.mark.integration
def test_deskewed_and_shifted_mnist_identical_to_brute_force(images):
    train, test = images[0][:3_000], images[1][:200]
    deskewed = flat(kernels.deskew(train)), flat(kernels.deskew(test))
    shifted = np.concatenate(
        [flat(train)] + [flat(kernels.shift_images(train, dx, dy)) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    )  # 5x: 15,000 rows
    for X_train, X_test in (deskewed, (shifted, flat(test))):
        dist, ind = search(X_test, X_train, 4, "auto", train_chunk=5_000)
        assert_same_as_brute_force(X_test, X_train, 4, dist, ind)


@pytest.mark.integration
def test_downscaled_and_pca_floats_identical_to_brute_force(images):
    from sklearn.decomposition import PCA

    train, test = images[0][:4_000], images[1][:120]
    down = (
        flat(kernels.downscale_local_mean(train, 2)).astype(np.float32),
        flat(kernels.downscale_local_mean(test, 2)).astype(np.float32),
    )  # 196 float columns
    pca = PCA(50, random_state=0).fit(flat(train).astype(np.float32))
    pcs = pca.transform(flat(train).astype(np.float32)), pca.transform(flat(test).astype(np.float32))
    for X_train, X_test, m in (down + (components_for_width(196),), pcs + (12,)):
        with small_steps():
            dist, ind = search(X_test, X_train, 5, fit_projection(X_train, m), train_chunk=1_000)
        assert_same_as_brute_force(X_test, X_train, 5, dist, ind)


@pytest.mark.integration
def test_classifier_prunes_and_predicts_like_the_plain_kernel(images):
    train, test = flat(images[0]), flat(images[1])
    labels = np.arange(len(train)) % 10
    pruned_model = KNNClassifier(n_neighbors=4, weights="distance", train_chunk_size=2_000).fit(train, labels)
    plain_model = KNNClassifier(n_neighbors=4, weights="distance", pruning="off").fit(train, labels)

    assert pruned_model.projection_ is not None and plain_model.projection_ is None
    np.testing.assert_array_equal(pruned_model.predict_proba(test), plain_model.predict_proba(test))
    np.testing.assert_array_equal(pruned_model.kneighbors(test)[1], plain_model.kneighbors(test)[1])


def test_long_query_chunks_are_split_into_chains_and_results_keep_their_chunks():
    rng = np.random.default_rng(8)
    X_train = rng.integers(0, 256, size=(5_000, 200), dtype=np.uint8)
    X_test = rng.integers(0, 256, size=(2_600, 200), dtype=np.uint8)
    projection = fit_projection(X_train, 16)
    dist, ind = kneighbors(
        da.from_array(X_test, chunks=(2_000, -1)), da.from_array(X_train, chunks=(1_000, -1)), 3, projection=projection
    )
    assert dist.chunks == ind.chunks == ((2_000, 600), (3,))
    blocks = {key[1] for key in dict(dist.__dask_graph__()) if str(key[0]).startswith("knn-pruned")}
    assert len(blocks) == 6  # 2,600 queries in chunks of 512: six chains
    assert_same_as_brute_force(X_test, X_train, 3, *dask.compute(dist, ind, scheduler="threads"))


# ----------------------------------------------------------------------------- adversarial inputs


def test_duplicates_and_all_zero_rows_rank_by_index():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, size=(300, 200), dtype=np.uint8)
    rows[::7] = 0  # all-zero rows, duplicated many times
    X_train = np.concatenate([rows, rows, rows[::-1]])  # every row three times, far apart
    X_test = np.concatenate([rows[:40], np.zeros((5, 200), np.uint8)])  # queries on training rows, zero queries
    projection = fit_projection(X_train, 16)
    with small_steps(step=128, slab=16):
        dist, ind = search(X_test, X_train, 7, projection, train_chunk=250)
    assert_same_as_brute_force(X_test, X_train, 7, dist, ind)
    assert (dist[:, 0] == 0).all()


def test_equal_distances_everywhere_keep_index_order():
    # every train row differs from the query in one coordinate by 3: all distances are 9
    d = 180
    X_test = np.full((3, d), 100, dtype=np.int16)
    X_train = np.repeat(X_test[:1], 2 * d, axis=0)
    X_train[np.arange(d), np.arange(d)] += 3
    X_train[d + np.arange(d), np.arange(d)] -= 3
    projection = fit_projection(X_train, 8)
    with small_steps(step=50, slab=2, dense_min=0):
        dist, ind = search(X_test, X_train, 5, projection, train_chunk=90)
    assert_same_as_brute_force(X_test, X_train, 5, dist, ind)
    np.testing.assert_array_equal(ind, np.tile(np.arange(5), (3, 1)))


def test_data_with_no_variance_outside_the_components():
    rng = np.random.default_rng(5)
    basis = rng.integers(-3, 4, size=(6, 300))
    X_train = (rng.integers(0, 5, size=(2_000, 6)) @ basis).astype(np.int32)  # rank 6: residuals are 0
    X_test = (rng.integers(0, 5, size=(50, 6)) @ basis).astype(np.int32)
    projection = fit_projection(X_train, 6)
    residual = project_rows(X_train, projection)
    assert residual is not None  # residual norms vanish up to the float64 cancellation in |y|^2 - |p|^2
    assert (residual.features[:, -1] <= 1e-6 * np.sqrt(residual.sq_norms)).all()
    with small_steps(step=300, slab=16):
        dist, ind = search(X_test, X_train, 4, projection, train_chunk=700)
    assert_same_as_brute_force(X_test, X_train, 4, dist, ind)


@pytest.mark.parametrize("use_compiled", [True, False])
@pytest.mark.parametrize("dtype", [np.int32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_ties_under_tight_bounds_keep_the_lower_index(dtype, seed, use_compiled):
    if use_compiled and not compiled.available():
        pytest.skip("numba is not installed: only the numpy path exists")
    # rank-3 data: the bound equals the distance up to rounding, and distances repeat, so rows tied
    # with the k-th candidate sit right at the threshold; only the error allowance keeps them
    rng = np.random.default_rng(seed)
    basis = rng.integers(-2, 3, size=(3, 40))
    X_train = (rng.integers(0, 3, size=(3_000, 3)) @ basis).astype(dtype)
    X_test = (rng.integers(0, 3, size=(40, 3)) @ basis).astype(dtype)
    if dtype == np.float64:
        X_train, X_test = X_train / 7.0 + 0.1, X_test / 7.0 + 0.1
    projection = fit_projection(X_train, 3)
    query = prepare_rows(X_test, projection, "query")
    for k in (1, 3, 8):
        with small_steps(step=997, slab=13), compiled_distances(use_compiled):
            sq, ind = pruned_kneighbors(query, prepare_rows(X_train, projection, "train"), 0, k, margin=0)
        assert_same_as_brute_force(X_test, X_train, k, sq, ind, squared=True)


def test_every_row_surviving_falls_back_to_the_plain_kernel():
    # all train rows are permutations of one vector: at the same distance from a constant query
    rng = np.random.default_rng(9)
    base = rng.integers(0, 50, size=256)
    X_train = np.stack([rng.permutation(base) for _ in range(3_000)]).astype(np.uint8)
    X_test = np.full((20, 256), int(base.mean()), dtype=np.uint8)
    projection = fit_projection(X_train, 16)
    stats: dict[str, int] = {}
    with small_steps(step=1_000, slab=8):
        sq, ind = pruned_kneighbors(
            prepare_rows(X_test, projection, "query"), prepare_rows(X_train, projection, "train"), 0, 4, 8, stats=stats
        )
    assert_same_as_brute_force(X_test, X_train, 4, sq, ind, squared=True)
    assert stats["dense_rows"] > 0


def test_a_poor_projection_prunes_less_but_stays_exact():
    rng = np.random.default_rng(11)
    X_train = rng.integers(0, 256, size=(1_500, 64), dtype=np.uint8)
    X_test = rng.integers(0, 256, size=(30, 64), dtype=np.uint8)
    random_basis = np.linalg.qr(rng.normal(size=(64, 5)))[0]
    projection = make_projection(rng.normal(scale=1e3, size=64), random_basis)  # far-off mean, random axes
    with small_steps(step=200, slab=7):
        dist, ind = search(X_test, X_train, 3, projection, train_chunk=400)
    assert_same_as_brute_force(X_test, X_train, 3, dist, ind)


@pytest.mark.parametrize("other", [np.int16, np.float64])
def test_uint8_rows_against_other_dtypes(other):
    rng = np.random.default_rng(12)
    X_train = rng.integers(0, 256, size=(900, 40), dtype=np.uint8)
    X_test = rng.integers(0, 256, size=(30, 40))
    projection = fit_projection(X_train, 10)
    for queries, rows in ((X_test.astype(np.uint8), X_train.astype(other)), (X_test.astype(other), X_train)):
        with small_steps(step=300, slab=8):
            sq, ind = pruned_kneighbors(
                prepare_rows(queries, projection, "query"), prepare_rows(rows, projection, "train"), 0, 4, 2
            )
        assert_same_as_brute_force(queries, rows, 4, sq, ind, squared=True)


def test_values_too_large_for_the_bound_use_the_plain_kernel():
    rng = np.random.default_rng(4)
    X_train = rng.normal(size=(300, 20)) * 1e30
    X_test = rng.normal(size=(10, 20)) * 1e30
    projection = fit_projection(X_train / 1e30, 4)  # fitted at another scale: rows are far from the mean
    assert prepare_rows(X_train, projection, "train").gemm is None
    dist, ind = search(X_test, X_train, 3, projection, train_chunk=100)
    assert_same_as_brute_force(X_test, X_train, 3, dist, ind)


def test_projection_checks_and_fits_its_columns():
    with pytest.raises(ValueError, match="finite"):
        make_projection(np.zeros(3), np.full((3, 1), np.nan))
    skewed = make_projection(np.zeros(4), np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert skewed.eps < 1e-6  # re-orthonormalised
    np.testing.assert_allclose(skewed.components.T @ skewed.components, np.eye(2), atol=1e-12)
    fitted = fit_projection_sample(np.random.default_rng(0).normal(size=(500, 30)), 4)
    assert isinstance(fitted, Projection) and fitted.components.shape == (30, 4)
    assert components_for_width(8) == 0 and components_for_width(100) == 50 and components_for_width(784) == 80


# ----------------------------------------------------------------------------- random data


@st.composite
def problems(draw):
    """Random integer or float data, small enough for brute force, with ties and a random projection."""
    kind = draw(st.sampled_from(["uint8", "int16", "bool", "float64", "float32"]))
    d = draw(st.integers(1, 24))
    n_train = draw(st.integers(1, 160))
    n_test = draw(st.integers(1, 25))
    k = draw(st.integers(1, min(6, n_train)))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.sampled_from([2, 4, 256]))
    rng = np.random.default_rng(seed)

    def rows(n):
        if kind == "bool":
            return rng.integers(0, 2, size=(n, d)).astype(bool)
        values = rng.integers(0, levels, size=(n, d))
        if kind == "int16":
            return (values * 37 - 600).astype(np.int16)
        if kind.startswith("float"):
            return (values / 7.0 - 3.0).astype(kind)  # near-ties and exact ties
        return values.astype(np.uint8)

    X_train, X_test = rows(n_train), rows(n_test)
    X_test[: n_test // 3] = X_train[rng.integers(0, n_train, size=n_test // 3)]  # exact matches
    m = draw(st.integers(1, d))
    if draw(st.booleans()):
        projection = fit_projection(X_train, m)
    else:
        basis = np.linalg.qr(rng.normal(size=(d, m)))[0]
        projection = make_projection(rng.normal(scale=draw(st.sampled_from([0.1, 10.0, 1e4])), size=d), basis)
    return X_train, X_test, k, projection, draw(st.integers(1, 40)), draw(st.integers(1, 9))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 3), st.booleans())
def test_pruned_kernel_equals_brute_force_on_random_data(problem, dense_min, use_compiled):
    X_train, X_test, k, projection, step, slab = problem
    split = X_train.shape[0] // 2  # two blocks chained through the prior
    query = prepare_rows(X_test, projection, "query")
    use_compiled = use_compiled and compiled.available()  # both exact-distance paths: numba and numpy
    with small_steps(step=step, slab=slab, dense_min=dense_min * 8), compiled_distances(use_compiled):
        first = pruned_kneighbors(query, prepare_rows(X_train[:split], projection, "train"), 0, k, 2)
        sq, ind = pruned_kneighbors(query, prepare_rows(X_train[split:], projection, "train"), split, k, 2, first)
    want_sq, want_ind = brute_force(X_test, X_train, k)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(sq, want_sq)
