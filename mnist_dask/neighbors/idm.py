"""The image distortion model (IDM) distance of Keysers et al. (2007), for re-ranking k-NN candidates.

Each pixel of the query may match the best pixel of the reference within ``warp`` pixels,
comparing the (2*context+1)^2 neighbourhoods of both images' Sobel gradients; the distance
is the sum over the query's pixels of those best matches. Small local deformations (a
slightly bent stroke, a thicker line) cost little, which Euclidean distance cannot do.
The compiled loop of :mod:`mnist_dask.neighbors.compiled` does the work when numba is
there (about 4x faster); the numpy version below is the reference and the fallback.
"""

from __future__ import annotations

import numpy as np

from mnist_dask.neighbors import compiled

_BATCH_PAIRS = 2_048  # (query, candidate) pairs per vectorised numpy step: ~60 MB of float32 temporaries
_COMPILED_PAIRS = 64  # pairs per compiled call (whole queries, at least one): its working set stays in cache


def sobel_gradients(images: np.ndarray) -> np.ndarray:
    """Vertical and horizontal Sobel gradients of (n, h, w) images as float32 (n, 2, h, w), zero outside."""
    x = np.pad(np.asarray(images, dtype=np.float32) / 255.0, ((0, 0), (1, 1), (1, 1)))
    h, w = x.shape[1] - 2, x.shape[2] - 2
    smooth_rows = x[:, :, :-2] + 2.0 * x[:, :, 1:-1] + x[:, :, 2:]  # [1 2 1] along columns
    smooth_cols = x[:, :-2, :] + 2.0 * x[:, 1:-1, :] + x[:, 2:, :]  # [1 2 1] along rows
    vertical = smooth_rows[:, 2:, :] - smooth_rows[:, :-2, :]
    horizontal = smooth_cols[:, :, 2:] - smooth_cols[:, :, :-2]
    return np.stack([vertical[:, :h], horizontal[:, :, :w]], axis=1)


def idm_distances(
    queries: np.ndarray, candidates: np.ndarray, warp: int = 2, context: int = 1, use_compiled: bool | None = None
) -> np.ndarray:
    """IDM distance (n, c) of each query's gradients (n, ch, h, w) to its candidates' (n, c, ch, h, w).

    ``use_compiled`` picks the compiled loop (default: when numba is available) or numpy.
    """
    n, c = candidates.shape[:2]
    out = np.empty((n, c), dtype=np.float64)
    if out.size == 0:  # no pairs: nothing for either path to compute
        return out
    use = compiled.available() if use_compiled is None else use_compiled
    batch, pairs = (_compiled_batch, _COMPILED_PAIRS) if use else (_idm_batch, _BATCH_PAIRS)
    step = max(1, pairs // c)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        out[rows] = batch(queries[rows], candidates[rows], warp, context)
    return out


def _compiled_batch(queries: np.ndarray, candidates: np.ndarray, warp: int, context: int) -> np.ndarray:
    """The compiled loop on a few queries' pairs: each query repeated for its own candidates only."""
    m, c = candidates.shape[:2]
    refs = candidates.reshape(m * c, *candidates.shape[2:])
    return compiled.idm_sums(np.repeat(queries, c, axis=0), refs, warp, context).reshape(m, c)


def _idm_batch(queries: np.ndarray, candidates: np.ndarray, warp: int, context: int) -> np.ndarray:
    n, c, ch, h, w = candidates.shape
    pad = warp + context
    refs = np.pad(candidates, ((0, 0), (0, 0), (0, 0), (pad, pad), (pad, pad)))
    query = np.pad(queries, ((0, 0), (0, 0), (context, context), (context, context)))[:, np.newaxis]
    size_h, size_w = h + 2 * context, w + 2 * context
    best = np.full((n, c, h, w), np.inf, dtype=np.float32)
    diff = np.empty((n, c, ch, size_h, size_w), dtype=np.float32)
    for dy in range(-warp, warp + 1):
        for dx in range(-warp, warp + 1):
            shifted = refs[..., warp + dy : warp + dy + size_h, warp + dx : warp + dx + size_w]
            np.subtract(query, shifted, out=diff)
            np.square(diff, out=diff)
            energy = diff.sum(axis=2)  # (n, c, h + 2 context, w + 2 context)
            np.minimum(best, _box_sum(energy, context), out=best)
    return best.sum(axis=(2, 3), dtype=np.float64)


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sums over (2r+1)^2 windows of the last two axes, keeping only full windows (shrinks by 2r)."""
    if radius == 0:
        return values
    size = 2 * radius + 1
    height, width = values.shape[-2] - size + 1, values.shape[-1] - size + 1
    rows = values[..., :height, :].copy()
    for i in range(1, size):
        rows += values[..., i : i + height, :]
    out = rows[..., :width].copy()
    for j in range(1, size):
        out += rows[..., j : j + width]
    return out
