"""Transform stages on a real cluster and real MNIST: values, stage behaviour, kill and resume."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.transforms.kernels import deskew, shift_offsets
from mnist_dask.transforms.registry import run_transform


def _array(store: Store, path: str) -> np.ndarray:
    return zarr.open_group(store.url, mode="r")[path][:]


def _expected_order(seed: int, n: int, m: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n * m)


def test_shift5x_rows_are_scipy_shifts_of_their_source_images(store, client, mnist):
    run_transform(store, client, "shift", {})
    images = _array(store, "derived/shift5x/train/images")
    source = _array(store, "derived/shift5x/train/source_index")
    offset = _array(store, "derived/shift5x/train/offset")
    labels = _array(store, "derived/shift5x/train/labels")
    raw = mnist["train_images"]

    assert images.shape == (300_000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(labels, mnist["train_labels"][source])
    assert np.array_equal(np.bincount(source, minlength=60_000), np.full(60_000, 5))
    # every (image, offset) pair appears exactly once, in the seeded order recorded in the attributes
    order = _expected_order(42, 60_000, 5)
    assert np.array_equal(source, order % 60_000)
    assert [tuple(o) for o in np.array(shift_offsets(1, "cross"))[order[:3] // 60_000]] == [
        tuple(o) for o in offset[:3]
    ]
    # every row against scipy, grouped by offset (order=0 is exact for integer offsets)
    for dx, dy in shift_offsets(1, "cross"):
        rows = np.flatnonzero((offset[:, 0] == dx) & (offset[:, 1] == dy))
        assert rows.size == 60_000
        expected = ndi.shift(raw[source[rows]], [0, dy, dx], order=0, cval=0, mode="constant")
        assert np.array_equal(images[rows], expected)
    # and a sample with the notebook's own call (default spline order)
    for row in np.random.default_rng(0).choice(300_000, 200, replace=False):
        dx, dy = offset[row]
        assert np.array_equal(images[row], ndi.shift(raw[source[row]], [dy, dx], cval=0, mode="constant"))
    assert np.array_equal(_array(store, "derived/shift5x/test/images"), mnist["test_images"])


def test_same_parameters_skip_and_changed_parameters_refuse_without_force(store, client):
    assert run_transform(store, client, "shift", {}).action == "skipped"
    with pytest.raises(UserError, match=r"exists with chunks of 5000 rows \(asked for 4000\)"):  # same stage name
        run_transform(store, client, "shift", {"chunk_size": 4000})
    with pytest.raises(UserError, match="unknown parameter 'radius2'"):
        run_transform(store, client, "shift", {"radius2": 1})
    with pytest.raises(UserError, match="unknown"):
        run_transform(store, client, "sharpen", {})


def test_downscale_equals_skimage_local_mean(store, client, mnist):
    from skimage.transform import downscale_local_mean

    run_transform(store, client, "downscale", {"factor": 3})
    for split in ("train", "test"):
        stored = _array(store, f"derived/down10/{split}/images")
        expected = downscale_local_mean(mnist[f"{split}_images"], (1, 3, 3))
        assert stored.shape == (len(expected), 10, 10)
        np.testing.assert_array_equal(stored, expected.astype(np.float32))


def test_deskew_stage_applies_deskew_chunk_by_chunk(store, client, mnist):
    run_transform(store, client, "deskew", {})
    np.testing.assert_array_equal(_array(store, "derived/deskew/test/images"), deskew(mnist["test_images"]))


def test_scaling_and_variance_threshold_match_scikit_learn(store, client, mnist):
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.preprocessing import StandardScaler

    train = mnist["train_images"].reshape(60_000, -1).astype(np.float64)
    test = mnist["test_images"].reshape(10_000, -1).astype(np.float64)
    run_transform(store, client, "scale", {})
    expected = StandardScaler().fit(train).transform(test).astype(np.float32)
    np.testing.assert_allclose(_array(store, "derived/scaled/test/features"), expected, rtol=1e-5, atol=1e-5)

    run_transform(store, client, "varthresh", {"threshold": 100.0})
    selector = VarianceThreshold(100.0).fit(train)
    assert np.array_equal(_array(store, "derived/varthresh100/selected"), selector.get_support())
    assert np.array_equal(
        _array(store, "derived/varthresh100/test/features"), selector.transform(test).astype(np.uint8)
    )


def test_mean_image_overall_and_per_digit(store, client, mnist):
    run_transform(store, client, "mean", {})
    np.testing.assert_allclose(_array(store, "derived/mean/mean_image"), mnist["train_images"].mean(axis=0))
    per_class = _array(store, "derived/mean/per_class")
    np.testing.assert_allclose(per_class[7], mnist["train_images"][mnist["train_labels"] == 7].mean(axis=0))


def test_chains_carry_source_index(store, client):
    run_transform(store, client, "shift", {}, input_stage="derived/deskew")
    source = _array(store, "derived/deskew+shift5x/train/source_index")
    assert np.array_equal(source, _expected_order(42, 60_000, 5) % 60_000)


def test_input_stage_names_cannot_escape_the_store(store, client):
    for bad in ("derived/../../etc", "../raw", "derived/a/b", "/raw"):
        with pytest.raises(UserError, match="not a dataset stage"):
            run_transform(store, client, "deskew", {}, input_stage=bad)


def test_a_raw_stage_of_the_wrong_shape_or_dtype_is_refused(tmp_path):
    store = Store(str(tmp_path / "odd.zarr"))
    store.begin_stage("raw")
    root = zarr.open_group(store.url, mode="a")
    root.create_array("raw/train/images", shape=(10, 28, 27), dtype="uint8")
    root.create_array("raw/train/labels", shape=(10,), dtype="uint8")
    store.complete_stage("raw", {}, {})
    with pytest.raises(UserError, match=r"raw/train/images is \(10, 28, 27\) uint8, expected \(N, 28, 28\) uint8"):
        store.read_xy("raw", "train")


def test_a_missing_input_stage_is_a_user_error(store, client):
    with pytest.raises(
        UserError, match="input stage 'derived/deskew\\+blur3' is missing; compute it first with 'mnist-dask transform'"
    ):
        run_transform(store, client, "shift", {}, input_stage="derived/deskew+blur3")
