"""Builders that keep the rows: a kernel applied image by image (deskew, blur, downscale) and a
seeded subset of rows (sample)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from mnist_dask.data.sources import SPLITS
from mnist_dask.data.store import Store
from mnist_dask.transforms import kernels
from mnist_dask.transforms.arrays import Arrays, RowCounts, carry_labels, copy_split
from mnist_dask.transforms.parameters import ParameterError


@dataclass(frozen=True)
class PerImage:
    """A numpy kernel applied image by image, and which of the transform's parameters it takes: built lazily over
    a stage's splits (:meth:`build`), or applied to images at hand (:meth:`apply`: a user's query, see
    :mod:`mnist_dask.jobs.classify`), through the same :meth:`args`, so the two cannot drift apart."""

    kernel: Callable[..., np.ndarray]
    out_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    dtype: type[np.number]  # of the kernel's output, for the lazy array (np.uint8, np.float32)
    params: tuple[str, ...] = ()

    def args(self, p: dict[str, Any]) -> dict[str, Any]:
        """The kernel's keyword arguments: the parameters it takes, from the transform's."""
        return {key: p[key] for key in self.params}

    def apply(self, images: np.ndarray, p: dict[str, Any]) -> np.ndarray:
        """The kernel applied to ``images`` at hand, with the transform's parameters ``p``."""
        return self.kernel(images, **self.args(p))

    def build(self, store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
        """The kernel applied to both splits of ``input_stage``, chunk by chunk (lazy)."""
        arrays: Arrays = {}
        args = self.args(p)
        for split in SPLITS:
            images = store.read(f"{input_stage}/{split}/images")
            shape = self.out_shape(images.shape[1:])
            arrays[f"{split}/images"] = da.map_blocks(
                self.kernel,
                images,
                **args,
                dtype=self.dtype,
                chunks=(images.chunks[0], *shape),
                name=f"{self.kernel.__name__}-{split}-{tokenize(images.name, args)}",
            )
            arrays.update(carry_labels(store, input_stage, split))
        return arrays


def _downscaled_shape(factor: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    return lambda shape: tuple(-(-s // factor) for s in shape)


def _downscale(images: np.ndarray, factor: int) -> np.ndarray:
    return kernels.downscale_local_mean(images, factor).astype(np.float32)


def build_downscale(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Each image's ``factor`` x ``factor`` local means, both splits (float32)."""
    return PerImage(_downscale, _downscaled_shape(p["factor"]), np.float32, ("factor",)).build(store, input_stage, p)


def downscale_name(p: dict[str, Any]) -> str:
    """``down<n>``: the side of a downscaled 28 x 28 image; ``-factor<k>`` after it when a smaller factor gives
    the same side (8 and 7 both give 4), so every factor has its own name."""
    side = -(-28 // p["factor"])
    return f"down{side}" + ("" if -(-28 // side) == p["factor"] else f"-factor{p['factor']}")


def same_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of a kernel that keeps each image's size."""
    return shape


def build_sample(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """A seeded random subset of ``train`` training and ``test`` test rows (0 keeps a split whole), in order."""
    arrays: Arrays = {}
    rng = np.random.default_rng(p["seed"])
    for split in SPLITS:
        labels = store.read(f"{input_stage}/{split}/labels")
        size = p[split]
        if size > labels.shape[0]:  # its lower bound is in PARAMETERS
            raise ParameterError(
                "sample", split, f" must lie in [0, {labels.shape[0]}] (the input's {split} rows), got {size}"
            )
        rows = np.sort(rng.choice(labels.shape[0], size, replace=False)) if size else np.arange(labels.shape[0])
        for path, array in copy_split(store, input_stage, split).items():
            arrays[path] = array[rows]
    return arrays


def sample_rows(p: dict[str, Any], rows: RowCounts) -> RowCounts:
    """The row counts of a ``sample`` stage: ``train`` and ``test`` rows (0 keeps a split whole)."""
    return {split: p[split] or rows[split] for split in rows}


# the two kernels that keep each image's size and dtype (and that a query image can be given, see PerImage)
DESKEW = PerImage(kernels.deskew, same_shape, np.uint8)
BLUR = PerImage(kernels.gaussian_blur, same_shape, np.uint8, ("sigma",))
