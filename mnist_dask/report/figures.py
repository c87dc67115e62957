"""Draw a declared figure display (see :mod:`mnist_dask.report.spec`) as a base64 PNG.

Confusion matrices, ROC and precision-recall curves are drawn by scikit-learn's display
classes; the rest are small matplotlib drawings. Figures are made without pyplot's global
state, on the Agg backend; digits given by store rows are read from the run's store.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display, also on workers
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from mnist_dask.data.store import Store

DPI = 90
ANNOTATE_UP_TO = 12  # matrices up to this many rows/columns get their values written in


class StoredImages:
    """Rows of a store's image arrays, read on demand (a figure that needs them fails without a store)."""

    def __init__(self, store: Store | None) -> None:
        self.store = store

    def rows(self, stage: str, split: str, indices: list[int]) -> np.ndarray:
        """Images ``indices`` of ``<stage>/<split>/images`` as a numpy array."""
        if self.store is None:
            raise LookupError("no store recorded for the run, so its stored images cannot be shown")
        images = self.store.read(f"{stage}/{split}/images")
        if max(indices) >= images.shape[0]:
            raise IndexError(f"row {max(indices)} is beyond the {images.shape[0]:,} rows of {stage}/{split}/images")
        return np.asarray(images[np.asarray(indices)].compute())


def draw(display: dict[str, Any], images: StoredImages) -> str:
    """The display drawn as a base64 PNG (KeyError for a kind that is not a figure)."""
    figure = Figure(layout="constrained")
    DRAWERS[display["kind"]](figure, display, images)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_values(matrix: np.ndarray, normalize: str | None, errors_only: bool) -> np.ndarray:
    """Counts divided by their row ("true") or column ("pred") sums, the diagonal zeroed for errors only."""
    values = np.asarray(matrix, dtype=float if normalize else np.int64)
    if normalize:
        sums = values.sum(axis=1 if normalize == "true" else 0, keepdims=True)
        values = values / np.where(sums == 0, 1, sums)
    if errors_only:
        np.fill_diagonal(values, 0)
    return values


def _confusion_matrix(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """A confusion matrix through scikit-learn's ConfusionMatrixDisplay."""
    values = confusion_values(np.asarray(display["matrix"]), display["normalize"], display["errors_only"])
    n = len(values)
    figure.set_size_inches(max(3.5, 0.55 * n + 1.5), max(3.0, 0.5 * n + 1.0))
    ConfusionMatrixDisplay(confusion_matrix=values, display_labels=display["labels"]).plot(
        ax=figure.subplots(),
        cmap="Reds" if display["errors_only"] else "Blues",
        values_format=".2f" if display["normalize"] else "d",
        include_values=n <= ANNOTATE_UP_TO,
        text_kw={"fontsize": 7 if n > 4 else 10},
    )


def _roc_curves(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """ROC curves through RocCurveDisplay, the chance diagonal drawn once."""
    figure.set_size_inches(5.5, 4.8)
    ax = figure.subplots()
    for i, curve in enumerate(display["curves"]):
        RocCurveDisplay(
            fpr=np.asarray(curve["fpr"]), tpr=np.asarray(curve["tpr"]), roc_auc=curve["auc"], name=curve["name"]
        ).plot(ax=ax, plot_chance_level=i == len(display["curves"]) - 1)
    ax.grid(alpha=0.3)


def _precision_recall_curves(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """Precision-recall curves through PrecisionRecallDisplay."""
    figure.set_size_inches(5.5, 4.8)
    ax = figure.subplots()
    for curve in display["curves"]:
        PrecisionRecallDisplay(
            precision=np.asarray(curve["precision"]),
            recall=np.asarray(curve["recall"]),
            average_precision=curve["average_precision"],
            name=curve["name"],
        ).plot(ax=ax)
    ax.grid(alpha=0.3)


def _line_plot(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """Series against shared x values, with a legend when there are several."""
    figure.set_size_inches(7, 3.8)
    ax = figure.subplots()
    for name, values in display["series"].items():
        ax.plot(display["x"], values, label=name, marker="o" if display["markers"] else None)
    ax.set(xlabel=display["xlabel"], ylabel=display["ylabel"])
    if display["xlim"]:
        ax.set_xlim(*display["xlim"])
    if display["ylim"]:
        ax.set_ylim(*display["ylim"])
    if len(display["series"]) > 1:
        ax.legend()
    ax.grid(alpha=0.3)


def _digits(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """Groups of digits, each starting a new line labelled on its left, ``per_line`` to a line, captioned above.

    The tiles are placed on one canvas drawn once (one axes, not one per digit: many times faster),
    each scaled to its own range, as separate images would be.
    """
    per_line = display["per_line"]
    lines = [
        (group["label"] if i == 0 else "", pictures[i : i + per_line], group["captions"][i : i + per_line])
        for group in display["groups"]
        for pictures in [_group_images(group, images)]
        for i in range(0, max(len(pictures), 1), per_line)
    ]
    side = max(max(picture.shape) for _, pictures, _ in lines for picture in pictures)
    width, height = round(side * 1.15), round(side * 1.45)  # a tile's pitch: room for its caption above
    columns = min(per_line, max(len(pictures) for _, pictures, _ in lines))
    canvas = np.zeros((len(lines) * height, columns * width))
    ax = figure.subplots()
    for row, (label, pictures, captions) in enumerate(lines):
        top = row * height + height - side
        for column, (picture, caption) in enumerate(zip(pictures, captions)):
            low, high = float(picture.min()), float(picture.max())
            tile = (picture - low) / (high - low or 1.0)
            canvas[top : top + tile.shape[0], column * width : column * width + tile.shape[1]] = tile
            ax.text(column * width + side / 2, top - side * 0.08, caption, ha="center", va="bottom", fontsize=7)
        ax.text(-side * 0.15, top + side / 2, label, ha="right", va="center", fontsize=9)
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    figure.set_size_inches(columns * 0.8 + (1.0 if any(label for label, _, _ in lines) else 0.2), len(lines) * 1.0)


def _group_images(group: dict[str, Any], images: StoredImages) -> np.ndarray:
    """A digits group's pixels: inline, or read from the store."""
    if "images" in group:
        return np.asarray(group["images"])
    return images.rows(group["stage"], group["split"], group["indices"]) if group["indices"] else np.zeros((0, 1, 1))


def _pixel_maps(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """28x28 maps side by side (5 to a line): grey, or diverging colours with one shared scale and colour bar."""
    maps = {name: np.asarray(values, dtype=float) for name, values in display["maps"].items()}
    diverging = display["diverging"]
    limit = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
    columns = min(len(maps), 5)
    size = 4.0 if len(maps) == 1 else 2.0
    figure.set_size_inches(columns * size + (0.8 if diverging else 0), math.ceil(len(maps) / columns) * size)
    axes = figure.subplots(math.ceil(len(maps) / columns), columns, squeeze=False)
    shown = None
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, values) in zip(axes.flat, maps.items()):
        colours = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit} if diverging else {"cmap": "gray_r"}
        shown = ax.imshow(values, **colours)
        ax.set_title(name, fontsize=9)
    if diverging and shown is not None:
        figure.colorbar(shown, ax=list(axes.flat), shrink=0.8)


def _histogram(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """Binned counts as step lines, one per series, optionally on a log scale."""
    figure.set_size_inches(7, 3.8)
    ax = figure.subplots()
    for name, counts in display["counts"].items():
        ax.stairs(counts, display["bin_edges"], label=name)
    if display["log"]:
        ax.set_yscale("symlog", linthresh=1)
    ax.set(xlabel=display["xlabel"], ylabel="count")
    ax.legend()
    ax.grid(alpha=0.3)


def _heatmap(figure: Figure, display: dict[str, Any], images: StoredImages) -> None:
    """A matrix as colours with a colour bar, its values written in when it is small."""
    values = np.asarray(display["matrix"], dtype=float)
    figure.set_size_inches(max(3.5, 0.55 * values.shape[1] + 1.5), max(3.0, 0.5 * values.shape[0] + 1.0))
    ax = figure.subplots()
    limit = float(np.abs(values).max()) or 1.0
    colours = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit} if display["diverging"] else {"cmap": "Blues"}
    figure.colorbar(ax.imshow(values, **colours), ax=ax)
    ax.set(xlabel=display["xlabel"], ylabel=display["ylabel"])
    if max(values.shape) <= ANNOTATE_UP_TO:
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, format(value, display["value_format"]), ha="center", va="center", fontsize=7)


DRAWERS: dict[str, Callable[[Figure, dict[str, Any], StoredImages], None]] = {
    "confusion_matrix": _confusion_matrix,
    "roc_curves": _roc_curves,
    "precision_recall_curves": _precision_recall_curves,
    "line_plot": _line_plot,
    "digits": _digits,
    "pixel_maps": _pixel_maps,
    "histogram": _histogram,
    "heatmap": _heatmap,
}
