"""Builders that expand the training set: every image at every one-pixel shift (shift), or with
shifted and rotated copies (augment, rotate); the test split is copied unchanged."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.transforms import kernels
from mnist_dask.transforms.arrays import Arrays, RowCounts, copy_split, source_index
from mnist_dask.transforms.names import number


def build_shift(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Every training image at every offset, rows in a seeded random order; test copied.

    Output row r is image ``order[r] % n`` at offset ``order[r] // n`` for a seeded
    permutation ``order`` of ``n * m`` rows. Each output chunk is one task that gathers
    its rows from the (small, 47 MB) input and shifts them, so a worker holds the input
    plus a few output chunks, never the expanded set.
    """
    offsets = np.array(_offsets(p), dtype=np.int8)
    images = store.read(f"{input_stage}/train/images").rechunk({0: -1})  # one block: the gather source
    n, m, chunk = images.shape[0], len(offsets), p["chunk_size"]
    permutation = dask.delayed(_permutation, pure=True)(
        p["seed"], n * m, dask_key_name=f"shift-order-{p['seed']}-{n * m}"
    )
    order = da.from_delayed(permutation, shape=(n * m,), dtype=np.int64).rechunk(chunk)
    gather = {"n": n, "offsets": offsets}
    arrays = {
        "train/images": da.blockwise(
            _gather_shifted,
            "ijk",
            order,
            "i",
            images,
            "xjk",
            concatenate=True,
            dtype=images.dtype,
            name=f"shift-images-{tokenize(order.name, images.name, offsets)}",
            **gather,
        ),
        "train/labels": _gather_rows(order, store.read(f"{input_stage}/train/labels"), n),
        "train/source_index": _gather_rows(order, source_index(store, input_stage), n),
        "train/offset": da.blockwise(
            _offsets_of,
            "ij",
            order,
            "i",
            new_axes={"j": 2},
            dtype=np.int8,
            name=f"shift-offsets-{tokenize(order.name, offsets, n)}",
            **gather,
        ),
    }
    return {**arrays, **copy_split(store, input_stage, "test")}


def _permutation(seed: int, size: int) -> np.ndarray:
    """The seeded row order of the expansion, computed once on a worker (12 MB at 25x)."""
    return np.random.default_rng(seed).permutation(size)


def _gather_rows(order: da.Array, values: da.Array, n: int) -> da.Array:
    """Per-row values (labels, source index) of the images each output row came from."""
    return da.blockwise(
        lambda o, v: v[o % n],
        "i",
        order,
        "i",
        values.rechunk(-1),
        "x",
        concatenate=True,
        dtype=values.dtype,
        name=f"shift-gather-{values.name}",
    )


def _gather_shifted(order: np.ndarray, images: np.ndarray, n: int, offsets: np.ndarray) -> np.ndarray:
    """Rows ``order`` of the expansion: image ``order % n`` shifted by ``offsets[order // n]``."""
    return _shift_rows(images[order % n], offsets[order // n])


def _offsets_of(order: np.ndarray, n: int, offsets: np.ndarray) -> np.ndarray:
    return offsets[order // n]


def _shift_rows(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each image by its own (dx, dy) row of ``offsets`` (shape (n, 2))."""
    out = np.empty_like(images)
    for dx, dy in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dx) & (offsets[:, 1] == dy))
        out[rows] = kernels.shift_images(images[rows], int(dx), int(dy))
    return out


def build_augment(store: Store, input_stage: str, p: dict[str, Any], name: str = "augment") -> Arrays:
    """Training set plus shifted and rotated copies, copy-major: row ``j * n + i`` is copy j of image i.

    Copy 0 is the original; then the other shifts of ``radius``/``shape`` (as ``shift``),
    then rotations by ``-degrees`` and ``+degrees`` (none when degrees is 0). Per row it
    records ``copy`` (0 = original), ``offset`` (dx, dy), ``angle`` and ``source_index``;
    the test split is copied unchanged.
    """
    copies = augment_copies(p, name)
    images = store.read(f"{input_stage}/train/images").rechunk({0: p["chunk_size"]})
    n, m = images.shape[0], len(copies)
    blocks = [
        images.map_blocks(
            _apply_copy,
            dx=dx,
            dy=dy,
            degrees=angle,
            dtype=images.dtype,
            name=f"augment-{j}-{tokenize(images.name, dx, dy, angle)}",
        )
        for j, (dx, dy, angle) in enumerate(copies)
    ]
    per_copy = _per_copy_rows(copies, n, images.chunks[0])
    labels = store.read(f"{input_stage}/train/labels").rechunk(images.chunks[0])
    source = source_index(store, input_stage).rechunk(images.chunks[0])
    arrays = {
        "train/images": da.concatenate(blocks, axis=0),
        "train/labels": da.concatenate([labels] * m),
        "train/source_index": da.concatenate([source] * m),
        **per_copy,
    }
    return {**arrays, **copy_split(store, input_stage, "test")}


def augment_copies(p: dict[str, Any], name: str = "augment") -> list[tuple[int, int, float]]:
    """The (dx, dy, degrees) of every copy an ``augment``/``rotate`` stage makes, the original first."""
    shifts = _offsets({"radius": p.get("radius", 0), "shape": p.get("shape", "cross")}, "augment")
    copies = [(dx, dy, 0.0) for dx, dy in shifts]
    degrees = float(p["degrees"])
    if not 0 <= degrees <= 180:  # checked with the transform's own name before; kept for direct callers
        raise UserError(f"transform {name}: degrees must lie in [0, 180], got {degrees:g}")
    return copies + ([(0, 0, -degrees), (0, 0, degrees)] if degrees else [])


def _apply_copy(images: np.ndarray, dx: int, dy: int, degrees: float) -> np.ndarray:
    """One augmentation copy of a block: shifted by (dx, dy), or rotated when degrees is non-zero."""
    if degrees:
        return kernels.rotate_images(images, degrees)
    return kernels.shift_images(images, dx, dy) if (dx or dy) else images.copy()


def _per_copy_rows(copies: list[tuple[int, int, float]], n: int, chunks: tuple[int, ...]) -> Arrays:
    """``train/copy``, ``train/offset`` and ``train/angle`` for the copy-major rows."""
    m = len(copies)
    table = np.array(copies, dtype=np.float64)
    copy_ids = np.repeat(np.arange(m, dtype=np.int16), n)
    return {
        "train/copy": da.from_array(copy_ids, chunks=chunks * m),
        "train/offset": da.from_array(np.repeat(table[:, :2].astype(np.int8), n, axis=0), chunks=(chunks * m, 2)),
        "train/angle": da.from_array(np.repeat(table[:, 2].astype(np.float32), n), chunks=chunks * m),
    }


def augment_name(p: dict[str, Any]) -> str:
    """``aug<m>x-s<r><c|s>-r<deg>``: number of copies, shift set and rotation angle."""
    shifts = f"s{p['radius']}{p['shape'][0]}" if p["radius"] else "s0"
    return f"aug{len(augment_copies(p))}x-{shifts}-r{number(p['degrees'])}"


def shift_rows(p: dict[str, Any], rows: RowCounts) -> RowCounts:
    """The row counts of a ``shift`` stage: every training row once per offset (radius 1 cross: 5x); test as is."""
    return {**rows, "train": rows["train"] * len(_offsets(p))}


def augment_rows(p: dict[str, Any], rows: RowCounts) -> RowCounts:
    """The row counts of an ``augment`` stage: every training row once per copy; test as is."""
    return {**rows, "train": rows["train"] * len(augment_copies(p))}


def rotate_rows(p: dict[str, Any], rows: RowCounts) -> RowCounts:
    """The row counts of a ``rotate`` stage: every training row and its two rotated copies (3x); test as is."""
    return {**rows, "train": rows["train"] * len(augment_copies({**p, "radius": 0}, "rotate"))}


def build_rotate(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Originals plus copies rotated by -degrees and +degrees (an ``augment`` without shifts)."""
    return build_augment(store, input_stage, {**p, "radius": 0, "shape": "cross"}, name="rotate")


def _offsets(p: dict[str, Any], name: str = "shift") -> list[tuple[int, int]]:
    """The shift offsets of ``radius``/``shape``; a bad value is a UserError naming transform ``name``."""
    try:
        return kernels.shift_offsets(p["radius"], p["shape"])
    except ValueError as exc:
        raise UserError(f"transform {name}: {exc}") from None


def shift_name(p: dict[str, Any]) -> str:
    """``shift<m>x``: the number of copies of each image the expansion holds (its seed: a mark, see registry)."""
    return f"shift{len(_offsets(p))}x"
