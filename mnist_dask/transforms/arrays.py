"""The lazy arrays a stage builder returns, and what every dataset stage carries through: labels and,
for training rows, the original image each row came from."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from mnist_dask.data.store import Store

Arrays = dict[str, da.Array]  # path relative to the stage -> lazy array
IMAGES, FEATURES = "images", "features"  # what a dataset stage holds per split, beside its labels
RowCounts = dict[str, int]  # rows per split: {"train": n, "test": n}


def same_rows(p: dict[str, Any], rows: RowCounts) -> RowCounts:
    """The row counts of a transform that keeps every row of both splits (its parameters do not matter)."""
    return dict(rows)


def copy_split(store: Store, input_stage: str, split: str) -> Arrays:
    """A split passed through unchanged: its images, labels and (training rows) source index."""
    return {f"{split}/images": store.read(f"{input_stage}/{split}/images"), **carry_labels(store, input_stage, split)}


def carry_labels(store: Store, input_stage: str, split: str) -> Arrays:
    """Labels, and for training rows the original image index, carried through unchanged."""
    arrays = {f"{split}/labels": store.read(f"{input_stage}/{split}/labels")}
    if split == "train":
        arrays["train/source_index"] = source_index(store, input_stage)
    return arrays


def source_index(store: Store, input_stage: str) -> da.Array:
    """Which original training image each row came from (``arange`` for raw data)."""
    if input_stage != "raw":
        return store.read(f"{input_stage}/train/source_index")
    labels = store.read("raw/train/labels")
    return da.arange(labels.shape[0], chunks=labels.chunks, dtype=np.int64)


def as_rows(images: da.Array) -> da.Array:
    """Images as one row of pixels each (features are already flat)."""
    return images.reshape(images.shape[0], -1) if images.ndim > 2 else images
