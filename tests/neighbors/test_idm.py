"""The IDM distance: equal to a direct per-pixel implementation, and tolerant of small deformations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mnist_dask.neighbors import compiled
from mnist_dask.neighbors.idm import idm_distances, sobel_gradients
from mnist_dask.transforms.kernels import shift_images


def direct_idm(query: np.ndarray, reference: np.ndarray, warp: int, context: int) -> float:
    """Keysers' definition, pixel by pixel: each query pixel's best-matching context within the warp."""
    _ch, h, w = query.shape
    pad = warp + context
    q = np.pad(query, ((0, 0), (context, context), (context, context)))
    r = np.pad(reference, ((0, 0), (pad, pad), (pad, pad)))
    total = 0.0
    for y in range(h):
        for x in range(w):
            patch = q[:, y : y + 2 * context + 1, x : x + 2 * context + 1]
            total += min(
                float(
                    (
                        (
                            patch
                            - r[
                                :,
                                y + warp + dy : y + warp + dy + 2 * context + 1,
                                x + warp + dx : x + warp + dx + 2 * context + 1,
                            ]
                        )
                        ** 2
                    ).sum()
                )
                for dy in range(-warp, warp + 1)
                for dx in range(-warp, warp + 1)
            )
    return total


PATHS = [pytest.param(False, id="numpy"), pytest.param(True, id="compiled")]


def _path(use_compiled: bool) -> bool:
    if use_compiled and not compiled.available():
        pytest.fail("numba (a dependency) is not importable, so the compiled IDM loop cannot be tested")
    return use_compiled


@pytest.mark.parametrize("use_compiled", PATHS)
@pytest.mark.parametrize("warp, context", [(0, 0), (1, 1), (2, 1), (1, 2), (3, 0)])
def test_equals_the_direct_definition(warp, context, use_compiled):
    rng = np.random.default_rng(warp * 10 + context)
    queries = rng.random((3, 2, 9, 8), dtype=np.float32)
    candidates = rng.random((3, 4, 2, 9, 8), dtype=np.float32)
    got = idm_distances(queries, candidates, warp=warp, context=context, use_compiled=_path(use_compiled))
    want = [[direct_idm(queries[i], candidates[i, j], warp, context) for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_compiled_and_numpy_rank_real_candidates_alike(mnist):
    """On real digits (one channel and two; more pairs than one compiled call takes) both paths agree."""
    images = mnist["train_images"]
    rng = np.random.default_rng(0)
    queries = sobel_gradients(images[:20])
    candidates = sobel_gradients(images[rng.integers(0, len(images), 20 * 7)]).reshape(20, 7, 2, 28, 28)
    for channels in (slice(0, 1), slice(0, 2)):
        q, c = queries[:, channels], candidates[:, :, channels]
        fast = idm_distances(q, c, warp=2, context=1, use_compiled=_path(True))
        reference = idm_distances(q, c, warp=2, context=1, use_compiled=False)
        np.testing.assert_allclose(fast, reference, rtol=1e-6)
        assert fast.shape == (20, 7) and (fast > 0).all()


@pytest.mark.parametrize("use_compiled", PATHS)
@pytest.mark.parametrize("n, c", [(0, 3), (2, 0)])
def test_no_pairs_give_an_empty_table(n, c, use_compiled):
    candidates = np.zeros((n, c, 2, 6, 6), dtype=np.float32)
    got = idm_distances(np.zeros((n, 2, 6, 6), dtype=np.float32), candidates, use_compiled=_path(use_compiled))
    assert got.shape == (n, c)


def test_sobel_gradients_equal_scipy_image_by_image(mnist):
    images = mnist["train_images"][:5]
    gradients = sobel_gradients(images)
    for image, (vertical, horizontal) in zip(images, gradients):
        x = image.astype(np.float32) / 255.0
        np.testing.assert_allclose(vertical, ndimage.sobel(x, axis=0, mode="constant"), atol=1e-5)
        np.testing.assert_allclose(horizontal, ndimage.sobel(x, axis=1, mode="constant"), atol=1e-5)


def test_a_one_pixel_shift_costs_nothing_within_the_warp_but_a_lot_in_euclidean_terms(mnist):
    image = mnist["train_images"][:1]
    shifted = shift_images(image, 1, 1)
    other = mnist["train_images"][1:2]  # a different digit
    q = sobel_gradients(image)
    refs = np.stack([sobel_gradients(shifted), sobel_gradients(other)], axis=1)
    shifted_idm, other_idm = idm_distances(q, refs, warp=1, context=1)[0]
    assert shifted_idm == pytest.approx(0.0, abs=1e-6)
    assert other_idm > 0
    assert ((q[0] - refs[0, 0]) ** 2).sum() > 0.1 * ((q[0] - refs[0, 1]) ** 2).sum()  # Euclidean sees the shift
