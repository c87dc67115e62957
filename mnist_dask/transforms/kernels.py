"""Pure numpy image transforms on a block of images shaped (n, H, W).

Every function takes a whole block and returns a whole block (the first axis is
the image axis), is deterministic and allocates only its output plus small
temporaries, so it can be wrapped in ``dask.array.map_blocks`` over chunks along
axis 0.

Coordinates: ``dx`` is along columns (positive moves content right) and ``dy``
along rows (positive moves content down), as in ``scipy.ndimage.shift(image,
[dy, dx])``. Transforms that interpolate (deskew, blur, rotate) compute in
float64 and round-and-clip back to uint8, so intensities are taken to be on the
0..255 scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SHIFT_SHAPES = ("cross", "square")


def shift_images(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift every image by (dx, dy) whole pixels with zero fill, by slicing (no interpolation).

    Equals ``scipy.ndimage.shift(image, [dy, dx], mode='constant', cval=0)``; dtype is kept.
    """
    _check_block(images)
    out = np.empty_like(images)
    _shift_into(images, int(dx), int(dy), out)
    return out


def shift_offsets(radius: int, shape: str) -> list[tuple[int, int]]:
    """The (dx, dy) offsets of an augmentation set, the original (0, 0) always first.

    'cross' radius r: (0,0), then for k = 1..r: (k,0) right, (-k,0) left, (0,k) down,
    (0,-k) up (r=1 is the notebook's 5-offset set). 'square' radius r: (0,0), then all
    other (dx, dy) in [-r, r]^2 in row-major order (dy outer, dx inner, both ascending).
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise ValueError(f"shift radius must be an integer, got {radius!r}")
    if not 0 <= radius <= 127:
        raise ValueError(f"shift radius must be between 0 and 127, got {radius}")
    if shape == "cross":
        return _cross_offsets(int(radius))
    if shape == "square":
        return _square_offsets(int(radius))
    raise ValueError(f"shift shape must be one of {', '.join(SHIFT_SHAPES)}, got {shape!r}")


def downscale_local_mean(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean over each factor x factor block (float64), like skimage's downscale_local_mean.

    Padded far-edge blocks still divide by factor**2, so 3x3 on 28x28 gives 10x10.
    """
    _check_block(images)
    factor = _check_factor(factor)
    sums = _blocks(images, factor).sum(axis=(2, 4), dtype=np.float64)
    return sums / (factor * factor)


def deskew(images: np.ndarray) -> np.ndarray:
    """Remove each image's slant with the classic second-moment shear; uint8 out.

    With intensity weights I, rows y and columns x: cy, cx = centre of mass,
    alpha = cov(x, y) / var(y). Output pixel (r, c) samples input (bilinear, zero fill) at
    (cy + (r - H/2), cx + (c - W/2) + alpha * (r - H/2)), which unshears and puts the
    centre of mass at (H/2, W/2). Blank images (and alpha=0 when var(y)=0) pass through.
    """
    _check_block(images)
    cy, cx, alpha = _centre_and_skew(images)
    centre = np.array(images.shape[1:], dtype=np.float64) / 2.0
    out = np.array(images, dtype=np.uint8, copy=True)
    for i in np.flatnonzero(np.isfinite(alpha)):
        matrix = np.array([[1.0, 0.0], [alpha[i], 1.0]])
        offset = np.array([cy[i], cx[i]]) - matrix @ centre
        warped = ndimage.affine_transform(
            images[i].astype(np.float64), matrix, offset=offset, order=1, mode="constant", cval=0.0
        )
        out[i] = _round_to_uint8(warped)
    return out


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each image (sigma on the two image axes only, zero fill); uint8 out."""
    _check_block(images)
    blurred = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0.0, sigma, sigma), mode="constant", cval=0.0)
    return _round_to_uint8(blurred)


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate each image about its centre as scipy.ndimage.rotate (bilinear, same size, zero fill).

    Positive degrees turn content counter-clockwise as displayed (row 0 at the top); uint8 out.
    """
    _check_block(images)
    rotated = ndimage.rotate(
        images.astype(np.float64),
        degrees,
        axes=(2, 1),
        reshape=False,
        order=1,
        mode="constant",
        cval=0.0,
    )
    return _round_to_uint8(rotated)


def _check_block(images: np.ndarray) -> None:
    """Reject anything that is not a block of 2-D images (n, H, W)."""
    if not isinstance(images, np.ndarray) or images.ndim != 3:
        shape = getattr(images, "shape", None)
        raise ValueError(f"images must be a numpy array shaped (n, H, W), got shape {shape}")


def _shift_into(images: np.ndarray, dx: int, dy: int, out: np.ndarray) -> None:
    """Write images shifted by (dx, dy) into out (same shape): zero it, then copy the overlap."""
    out[...] = 0
    height, width = images.shape[1:]
    if abs(dx) >= width or abs(dy) >= height:
        return
    out[:, _dst(dy, height), _dst(dx, width)] = images[:, _src(dy, height), _src(dx, width)]


def _dst(delta: int, size: int) -> slice:
    """Destination slice along one axis for a shift of delta (|delta| < size)."""
    return slice(delta, size) if delta >= 0 else slice(0, size + delta)


def _src(delta: int, size: int) -> slice:
    """Source slice along one axis for a shift of delta (|delta| < size)."""
    return slice(0, size - delta) if delta >= 0 else slice(-delta, size)


def _cross_offsets(radius: int) -> list[tuple[int, int]]:
    """(0,0) then right, left, down, up at each distance 1..radius."""
    offsets = [(0, 0)]
    for k in range(1, radius + 1):
        offsets += [(k, 0), (-k, 0), (0, k), (0, -k)]
    return offsets


def _square_offsets(radius: int) -> list[tuple[int, int]]:
    """(0,0) then every other (dx, dy) in [-radius, radius]^2, dy outer and dx inner."""
    span = range(-radius, radius + 1)
    return [(0, 0)] + [(dx, dy) for dy in span for dx in span if (dx, dy) != (0, 0)]


def _check_factor(factor: int) -> int:
    """A downscale factor must be a positive integer."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"downscale factor must be a positive integer, got {factor!r}")
    return int(factor)


def _blocks(images: np.ndarray, factor: int) -> np.ndarray:
    """View (n, H', k, W', k) of the images zero-padded at the far edges to multiples of k."""
    n, height, width = images.shape
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w)))
    return images.reshape(n, (height + pad_h) // factor, factor, (width + pad_w) // factor, factor)


def _centre_and_skew(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image centre of mass (cy, cx) and skew cov(x,y)/var(y); NaN skew for blank images."""
    weights = images.astype(np.float64)
    ys = np.arange(images.shape[1], dtype=np.float64)[None, :, None]
    xs = np.arange(images.shape[2], dtype=np.float64)[None, None, :]
    total = weights.sum(axis=(1, 2))
    blank = total == 0
    safe_total = np.where(blank, 1.0, total)
    cy = (weights * ys).sum(axis=(1, 2)) / safe_total
    cx = (weights * xs).sum(axis=(1, 2)) / safe_total
    dy = ys - cy[:, None, None]
    dx = xs - cx[:, None, None]
    var_y = (weights * dy * dy).sum(axis=(1, 2)) / safe_total
    cov_xy = (weights * dx * dy).sum(axis=(1, 2)) / safe_total
    alpha = np.divide(cov_xy, var_y, out=np.zeros_like(var_y), where=var_y > 0)
    alpha[blank] = np.nan
    return cy, cx, alpha


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    """Round to nearest (half to even) and clip to 0..255 as uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
