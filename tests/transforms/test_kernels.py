"""Tests for mnist_dask.transforms.kernels on real MNIST and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import downscale_local_mean as skimage_downscale_local_mean

from mnist_dask.transforms.kernels import (
    deskew,
    downscale_local_mean,
    gaussian_blur,
    rotate_images,
    shift_images,
    shift_offsets,
)

LARGE_OFFSETS = [(27, 0), (0, -27), (28, 0), (0, 28), (-30, 5), (40, -50)]


@pytest.fixture(scope="module")
def images(mnist: dict[str, np.ndarray]) -> np.ndarray:
    """A few hundred real MNIST training images."""
    return mnist["train_images"][:300]


def skew_of(image: np.ndarray) -> float:
    """Independent reference: cov(x, y) / var(y) of one image's intensity distribution."""
    rows, cols = np.nonzero(image)
    weights = image[rows, cols].astype(np.float64)
    cy, cx = np.average(rows, weights=weights), np.average(cols, weights=weights)
    cov = np.average((cols - cx) * (rows - cy), weights=weights)
    return cov / np.average((rows - cy) ** 2, weights=weights)


def sheared_bar() -> np.ndarray:
    """A 3-pixel-wide vertical bar sheared so it slants by half a column per row."""
    image = np.zeros((28, 28), dtype=np.uint8)
    for row in range(4, 24):
        col = round(14 + 0.5 * (row - 14))
        image[row, col - 1 : col + 2] = 255
    return image


@pytest.mark.parametrize("dx, dy", shift_offsets(2, "square") + LARGE_OFFSETS)
def test_shift_equals_scipy_shift_on_real_images(images: np.ndarray, dx: int, dy: int) -> None:
    expected = np.stack([ndimage.shift(im, [dy, dx], mode="constant", cval=0) for im in images])
    shifted = shift_images(images, dx, dy)
    assert shifted.dtype == np.uint8
    np.testing.assert_array_equal(shifted, expected)


def test_shift_moves_right_and_down_for_positive_offsets() -> None:
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 10, 10] = 7
    assert np.argwhere(shift_images(image, 3, 2)[0]).tolist() == [[12, 13]]


def test_shift_preserves_float_dtype_and_beyond_image_is_zero(images: np.ndarray) -> None:
    as_float = images[:10].astype(np.float32)
    assert shift_images(as_float, 1, -1).dtype == np.float32
    assert not shift_images(as_float, 28, 0).any()
    np.testing.assert_array_equal(shift_images(as_float, 0, 0), as_float)


def test_cross_radius_one_is_the_notebook_set_in_order() -> None:
    assert shift_offsets(1, "cross") == [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]


def test_square_radius_two_has_25_distinct_offsets_original_first() -> None:
    offsets = shift_offsets(2, "square")
    assert len(offsets) == 25 and offsets[0] == (0, 0)
    assert set(offsets) == {(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)}
    assert offsets[1:4] == [(-2, -2), (-1, -2), (0, -2)]


def test_radius_zero_gives_only_the_original() -> None:
    assert shift_offsets(0, "square") == [(0, 0)] == shift_offsets(0, "cross")


@pytest.mark.parametrize(
    "radius, shape", [(-1, "cross"), (1.5, "square"), (True, "cross"), (1, "disk"), (200, "square")]
)
def test_shift_offsets_rejects_invalid_arguments(radius: object, shape: str) -> None:
    with pytest.raises(ValueError, match="shift (radius|shape)"):
        shift_offsets(radius, shape)  # type: ignore[arg-type]


def test_downscale_mean_equals_skimage_on_real_images(images: np.ndarray) -> None:
    expected = skimage_downscale_local_mean(images, (1, 3, 3))
    result = downscale_local_mean(images, 3)
    assert result.shape == (300, 10, 10) and result.dtype == np.float64
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("factor", [1, 2, 4, 5, 7, 30])
def test_downscale_mean_equals_skimage_for_other_factors(images: np.ndarray, factor: int) -> None:
    expected = skimage_downscale_local_mean(images[:50], (1, factor, factor))
    assert np.array_equal(downscale_local_mean(images[:50], factor), expected)


def test_downscale_rejects_non_positive_factor(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="factor"):
        downscale_local_mean(images, 0)


def test_deskew_straightens_a_sheared_bar() -> None:
    bar = sheared_bar()
    straightened = deskew(bar[None])[0]
    assert skew_of(bar) > 0.4
    assert abs(skew_of(straightened)) < 0.05


def test_deskew_leaves_blank_image_unchanged() -> None:
    blank = np.zeros((2, 28, 28), dtype=np.uint8)
    out = deskew(blank)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, blank)


def test_deskew_keeps_mass_and_reduces_skew_on_real_images(images: np.ndarray) -> None:
    out = deskew(images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    ratio = out.sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    assert np.all(np.abs(ratio - 1) < 0.05)
    before = np.mean([abs(skew_of(im)) for im in images])
    after = np.mean([abs(skew_of(im)) for im in out])
    assert before > 0.1 and after < 0.02


def test_rotate_by_zero_is_identity(images: np.ndarray) -> None:
    out = rotate_images(images, 0)
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out, images)


def test_rotate_positive_angle_turns_counter_clockwise() -> None:
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 13:15, 20:22] = 255
    rows, cols = np.nonzero(rotate_images(image, 90)[0])
    assert rows.max() < 10 and set(cols) <= {13, 14}


def test_blur_keeps_shape_dtype_and_mass(images: np.ndarray) -> None:
    out = gaussian_blur(images, 1.0)
    assert out.dtype == np.uint8 and out.shape == images.shape
    ratio = out.sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    assert np.all(np.abs(ratio - 1) < 0.03)
    assert not np.array_equal(out, images)


@pytest.mark.parametrize("bad", [np.zeros((28, 28)), np.zeros((2, 28, 28, 1))])
def test_transforms_reject_non_block_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        shift_images(bad, 1, 0)
