"""The sample, augment, rotate and pca stages on a real cluster and (a sample of) real MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from sklearn.decomposition import PCA

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.transforms.kernels import deskew, rotate_images, shift_images, shift_offsets
from mnist_dask.transforms.registry import run_transform

SAMPLE = {"train": 2000, "test": 300, "seed": 3}
SAMPLED = "derived/sample2000-300-seed3"  # a seed other than the default is in the name


@pytest.fixture(scope="module")
def store(store, client) -> Store:
    """conftest's store (real MNIST in ``raw``) plus a seeded sample in ``derived/sample2000-300-seed3``."""
    run_transform(store, client, "sample", SAMPLE)
    return store


def _array(store: Store, path: str) -> np.ndarray:
    return zarr.open_group(store.url, mode="r")[path][:]


def test_sample_keeps_seeded_rows_in_order_with_their_source_index(store, mnist):
    source = _array(store, f"{SAMPLED}/train/source_index")
    rng = np.random.default_rng(SAMPLE["seed"])
    assert np.array_equal(source, np.sort(rng.choice(60_000, 2000, replace=False)))
    assert np.array_equal(_array(store, f"{SAMPLED}/train/images"), mnist["train_images"][source])
    assert np.array_equal(_array(store, f"{SAMPLED}/train/labels"), mnist["train_labels"][source])
    test_rows = np.sort(rng.choice(10_000, 300, replace=False))
    assert np.array_equal(_array(store, f"{SAMPLED}/test/images"), mnist["test_images"][test_rows])


def test_variants_of_other_seeds_live_side_by_side(store, client):
    """Another seed is another stage (the name says which), not a clash with the first or a rewrite of it."""
    before = _array(store, f"{SAMPLED}/train/source_index")
    assert run_transform(store, client, "sample", {**SAMPLE, "seed": 4}).stage == "derived/sample2000-300-seed4"
    assert run_transform(store, client, "sample", SAMPLE).action == "skipped"
    assert not np.array_equal(_array(store, "derived/sample2000-300-seed4/train/source_index"), before)
    shifted = {seed: run_transform(store, client, "shift", {"seed": seed}, input_stage=SAMPLED) for seed in (42, 7)}
    assert [outcome.stage for outcome in shifted.values()] == [f"{SAMPLED}+shift5x", f"{SAMPLED}+shift5x-seed7"]
    assert {outcome.action for outcome in shifted.values()} == {"written"}


def test_augment_rows_are_shifts_and_rotations_of_their_source_images(store, client, mnist):
    stage = run_transform(
        store, client, "augment", {"radius": 1, "shape": "cross", "degrees": 10.0}, input_stage=SAMPLED
    ).stage
    assert stage == f"{SAMPLED}+aug7x-s1c-r10"
    images, source = _array(store, f"{stage}/train/images"), _array(store, f"{stage}/train/source_index")
    copy, offset, angle = (_array(store, f"{stage}/train/{key}") for key in ("copy", "offset", "angle"))
    originals = mnist["train_images"][source[:2000]]
    assert images.shape == (14_000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(source)[np.unique(source)], np.full(2000, 7))
    assert np.array_equal(_array(store, f"{stage}/train/labels"), mnist["train_labels"][source])
    copies = [(dx, dy, 0.0) for dx, dy in shift_offsets(1, "cross")] + [(0, 0, -10.0), (0, 0, 10.0)]
    for j, (dx, dy, degrees) in enumerate(copies):
        rows = slice(j * 2000, (j + 1) * 2000)
        assert np.all(copy[rows] == j) and np.all(offset[rows] == (dx, dy)) and np.all(angle[rows] == degrees)
        assert np.array_equal(source[rows], source[:2000])
        expected = rotate_images(originals, degrees) if degrees else shift_images(originals, dx, dy)
        assert np.array_equal(images[rows], expected)
    assert np.array_equal(_array(store, f"{stage}/test/images"), _array(store, f"{SAMPLED}/test/images"))


def test_rotate_is_originals_plus_both_rotations(store, client, mnist):
    stage = run_transform(store, client, "rotate", {"degrees": 5.0}, input_stage=SAMPLED).stage
    assert stage == f"{SAMPLED}+rot5x3"
    images = _array(store, f"{stage}/train/images")
    originals = _array(store, f"{SAMPLED}/train/images")
    assert np.array_equal(
        images, np.concatenate([originals, rotate_images(originals, -5.0), rotate_images(originals, 5.0)])
    )


def test_pca_equals_scikit_learn_fitted_on_train_only(store, client):
    stage = run_transform(store, client, "deskew", {}, input_stage=SAMPLED).stage
    pca_stage = run_transform(store, client, "pca", {"n_components": 20}, input_stage=stage).stage
    train = _array(store, f"{stage}/train/images").reshape(2000, -1).astype(np.float32)
    test = _array(store, f"{stage}/test/images").reshape(300, -1).astype(np.float32)
    assert np.array_equal(_array(store, f"{stage}/train/images"), deskew(_array(store, f"{SAMPLED}/train/images")))
    reference = PCA(n_components=20, svd_solver="full").fit(train)
    components = _array(store, f"{pca_stage}/components")
    signs = np.sign(np.sum(components * reference.components_, axis=1))
    assert np.allclose(components * signs[:, None], reference.components_, atol=1e-3)
    assert np.allclose(_array(store, f"{pca_stage}/mean"), reference.mean_, atol=1e-3)
    for split, rows in (("train", train), ("test", test)):
        features = _array(store, f"{pca_stage}/{split}/features")
        assert features.dtype == np.float32 and features.shape == (len(rows), 20)
        assert np.allclose(features * signs, reference.transform(rows), rtol=1e-3, atol=0.05)
    assert np.array_equal(
        _array(store, f"{pca_stage}/train/source_index"), _array(store, f"{SAMPLED}/train/source_index")
    )


def test_pca_partial_whitening_and_fit_on_originals_of_an_augmented_set(store, client):
    augmented = run_transform(
        store, client, "augment", {"radius": 1, "shape": "cross", "degrees": 10.0}, input_stage=SAMPLED
    ).stage
    params = {"n_components": 10, "scale_power": 0.25, "fit_on": "originals"}
    stage = run_transform(store, client, "pca", params, input_stage=augmented).stage
    assert stage.endswith("+pca10p0.25")
    originals = _array(store, f"{SAMPLED}/train/images").reshape(2000, -1).astype(np.float32)
    reference = PCA(n_components=10, svd_solver="full").fit(originals)
    features = _array(store, f"{stage}/train/features")
    expected = reference.transform(originals) * reference.explained_variance_**-0.25
    signs = np.sign(np.sum(features[:2000] * expected, axis=0))
    assert np.allclose(features[:2000] * signs, expected, rtol=1e-3, atol=0.02)
    assert np.array_equal(_array(store, f"{stage}/train/copy"), _array(store, f"{augmented}/train/copy"))


def test_bad_parameters_are_user_errors(store, client):
    with pytest.raises(UserError, match="n_components"):
        run_transform(store, client, "pca", {"n_components": 900}, input_stage=SAMPLED)
    with pytest.raises(UserError, match="degrees"):
        run_transform(store, client, "augment", {"degrees": -3.0}, input_stage=SAMPLED)


def test_randomized_pca_matches_scikit_learn(store, client):
    """The randomized solver (dask-ml's fails in transform under scikit-learn >= 1.8) finds scikit-learn's
    components, signs included, and whitens as it does; as an approximation, the trailing components less
    exactly (scikit-learn's own randomized solver reaches a cosine of 0.998 here)."""
    params = {"n_components": 20, "whiten": True, "svd_solver": "randomized", "seed": 5}
    stage = run_transform(store, client, "pca", params, input_stage=SAMPLED).stage
    train = _array(store, f"{SAMPLED}/train/images").reshape(2000, -1).astype(np.float32)
    test = _array(store, f"{SAMPLED}/test/images").reshape(300, -1).astype(np.float32)
    reference = PCA(n_components=20, whiten=True, svd_solver="full").fit(train)
    assert np.allclose(_array(store, f"{stage}/explained_variance"), reference.explained_variance_, rtol=1e-3)
    assert np.all(np.sum(_array(store, f"{stage}/components") * reference.components_, axis=1) > 0.999)
    assert np.allclose(_array(store, f"{stage}/mean"), reference.mean_, atol=1e-3)
    for split, rows in (("train", train), ("test", test)):
        features, expected = _array(store, f"{stage}/{split}/features"), reference.transform(rows)
        assert features.dtype == np.float32 and features.shape == (len(rows), 20)
        assert np.allclose(features[:, :10], expected[:, :10], atol=1e-3)
        assert np.all(np.sqrt(np.mean((features - expected) ** 2, axis=0)) < 0.05)  # unit-variance columns
