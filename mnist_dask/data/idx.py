"""Parse and validate IDX files (the format MNIST is published in), gzipped or not.

Every problem becomes a one-line :class:`UserError` naming the file, so a bad download
or a hand-edited file never reaches the store.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from mnist_dask.errors import UserError

IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


def parse_images(raw: bytes, name: str) -> np.ndarray:
    """Parse an IDX image file's bytes into an ``(N, 28, 28) uint8`` array."""
    data = _decompress(raw, name)
    n, rows, cols = _header(data, name, IMAGES_MAGIC, ndim=3)
    if (rows, cols) != IMAGE_SHAPE:
        raise UserError(f"{name}: images are {rows}x{cols}, expected 28x28")
    _check_length(data, name, header=16, expected=n * rows * cols)
    if n == 0:
        raise UserError(f"{name}: holds 0 images; a dataset split needs at least one")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def parse_labels(raw: bytes, name: str) -> np.ndarray:
    """Parse an IDX label file's bytes into an ``(N,) uint8`` array of digits 0-9."""
    data = _decompress(raw, name)
    (n,) = _header(data, name, LABELS_MAGIC, ndim=1)
    _check_length(data, name, header=8, expected=n)
    if n == 0:
        raise UserError(f"{name}: holds 0 labels; a dataset split needs at least one")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    check_labels(labels, name)
    return labels


def check_labels(labels: np.ndarray, name: str) -> None:
    """Refuse labels outside 0-9, naming the first offending row."""
    bad = np.flatnonzero(labels >= N_CLASSES)
    if bad.size:
        raise UserError(f"{name}: label {int(labels[bad[0]])} at row {int(bad[0])} is outside 0-9")


def _decompress(raw: bytes, name: str) -> bytes:
    """Return the file's payload, gunzipping it when it starts with the gzip magic."""
    if not raw:
        raise UserError(f"{name}: empty file")
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        data = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise UserError(f"{name}: truncated or corrupt gzip data ({exc})") from None
    if not data:
        raise UserError(f"{name}: empty file (gzip holds no data)")
    return data


def _header(data: bytes, name: str, magic: int, ndim: int) -> tuple[int, ...]:
    """Check the big-endian magic number and return the dimension sizes."""
    size = 4 + 4 * ndim
    if len(data) < size:
        raise UserError(f"{name}: file is {len(data)} bytes, too short for an IDX header")
    found, *dims = struct.unpack(f">I{ndim}I", data[:size])
    if found != magic:
        raise UserError(f"{name}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    return tuple(dims)


def _check_length(data: bytes, name: str, header: int, expected: int) -> None:
    """Refuse data whose length disagrees with the sizes in the header."""
    actual = len(data) - header
    if actual != expected:
        raise UserError(f"{name}: header sizes promise {expected} data bytes but the file holds {actual}")
