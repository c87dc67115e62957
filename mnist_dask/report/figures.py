"""Figures of ``report.html``: matplotlib renderers that return base64 PNGs, and the walk over ``figures_data``.

The walk turns what the experiment jobs store under ``figures_data`` into figures by shape:
stacks of digit images (rows labelled by key), 28x28 pixel maps (coefficients in diverging
colours), confusion matrices, other numeric matrices (heatmaps), histograms (``bin_edges``)
and quadrant grids of stored images (``quadrants`` + ``indices_are``). Anything else is skipped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, also on workers
import matplotlib.pyplot as plt
import numpy as np

PIXELS = 784
SIDE = 28
MASK_WORDS = ("mask", "support", "kept", "selected")
#: curve sub-keys that only repeat the curve's kind (the figure title names it already)
CURVE_KINDS = {"roc", "pr", "precision_recall", "precision_recall_curve", "precision_recall_vs_threshold"}


class Figure(NamedTuple):
    """One report figure: its title, base64 PNG ("" when it could not be drawn) and caption (or why not)."""

    title: str
    png: str
    caption: str = ""


#: ``images(split)`` -> (the split's raw images, or None, and why not)
ImageSource = Callable[[str], "tuple[np.ndarray | None, str]"]


# -- renderers -----------------------------------------------------------------------------
def png(fig: Any) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def digit_grid(images: np.ndarray, labels: np.ndarray, rows: int = 5, cols: int = 10) -> str:
    """The first rows x cols images, each titled with its label."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0))
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(str(label), fontsize=8)
        ax.axis("off")
    return png(fig)


def confusion_figure(matrix: np.ndarray) -> str:
    """Counts beside the row-normalised errors (each row divided by its sum, diagonal zeroed)."""
    matrix = _integral(np.asarray(matrix))
    fig, (counts_ax, errors_ax) = plt.subplots(1, 2, figsize=(11, 4.8))
    heatmap(counts_ax, matrix, "Counts (rows: true, columns: predicted)", "d")
    rows = matrix.sum(axis=1, keepdims=True)
    errors = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    np.fill_diagonal(errors, 0)
    heatmap(errors_ax, errors, "Errors, row-normalised (diagonal zeroed)", ".3f")
    fig.tight_layout()
    return png(fig)


def heatmap(
    ax: Any,
    values: np.ndarray,
    title: str,
    fmt: str,
    cmap: str = "",
    axes: tuple[str, str] = ("predicted", "true"),
    center: bool = False,
) -> None:
    """A matrix as an annotated heatmap (annotations only up to 12 rows/columns)."""
    limit = float(np.abs(values).max()) or 1.0
    ax.imshow(
        values, cmap=cmap or ("Blues" if fmt == "d" else "Reds"), **({"vmin": -limit, "vmax": limit} if center else {})
    )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    if max(values.shape) > 12:
        return
    top = values.max() or 1
    for (i, j), value in np.ndenumerate(values):
        text = format(value, fmt) if fmt == "d" or value else ""
        ax.text(
            j,
            i,
            text if fmt == "d" else text.replace("0.", ".", 1),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if (abs(value) if center else value) > (limit if center else top) / 2 else "black",
        )


def matrix_figure(values: np.ndarray, title: str, axes: tuple[str, str]) -> str:
    """A plain numeric matrix as one heatmap (diverging colours when it holds negative values)."""
    values = _integral(values)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    center = bool((values < 0).any())
    heatmap(ax, values, title, "d" if values.dtype.kind in "iu" else ".3f", "RdBu_r" if center else "", axes, center)
    return png(fig)


def misclassified(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, limit: int) -> Figure:
    """The first ``limit`` misclassified test images, each titled "#index true→predicted"."""
    wrong = np.flatnonzero(labels != predicted)
    shown = wrong[:limit]
    title = f"Misclassified test images ({len(wrong):,} in all; the first {len(shown)})"
    if not len(shown):
        return Figure(title, "", "none")
    cols = 10
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"#{index} {labels[index]}→{predicted[index]}", fontsize=7)
    return Figure(title, png(fig), "title: test index, true → predicted")


def line_figure(x: list[float], y: list[float], xlabel: str, ylabel: str, area: Any, diagonal: bool) -> str:
    """A ROC (with the chance diagonal) or precision-recall curve on the unit square."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    label = f"area {area:.4f}" if isinstance(area, (int, float)) else None
    ax.plot(x, y, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    if label:
        ax.legend(loc="lower right" if diagonal else "lower left")
    return png(fig)


def threshold_figure(curve: dict[str, list[float]]) -> str:
    """Precision and recall against the decision threshold (the central 98% of thresholds shown)."""
    threshold = np.asarray(curve["threshold"], float)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(threshold, curve["precision"], label="precision")
    ax.plot(threshold, curve["recall"], label="recall", linestyle="--")
    low, high = np.percentile(threshold[np.isfinite(threshold)], [1, 99])
    if high > low:
        ax.set_xlim(low, high)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("threshold")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left")
    return png(fig)


def sweep_figure(sweep: dict[str, Any]) -> str:
    """Test accuracy against k."""
    by_k = sweep.get("test_accuracy_by_k", {})
    ks = [int(k) for k in by_k]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ks, list(by_k.values()), marker="o")
    ax.set_xlabel(f"k ({sweep.get('weights', '')} weights)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    return png(fig)


def pixel_maps_figure(maps: list[tuple[str, np.ndarray]]) -> str:
    """28x28 maps side by side: diverging colours around 0 when any value is negative, else grey digits."""
    diverging = any((m < 0).any() for _, m in maps)
    limit = max(float(np.abs(m).max()) for _, m in maps) or 1.0
    cols = min(len(maps), 5)
    rows = -(-len(maps) // cols)
    size = 4.0 if len(maps) == 1 else 2.0
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + (0.8 if diverging else 0), rows * size), squeeze=False)
    shown = None
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, values) in zip(axes.flat, maps):
        shown = ax.imshow(
            values, cmap="RdBu_r" if diverging else "gray_r", **({"vmin": -limit, "vmax": limit} if diverging else {})
        )
        if label:
            ax.set_title(label, fontsize=9)
    if diverging and shown is not None:
        fig.colorbar(shown, ax=list(axes.flat), shrink=0.8)
    return png(fig)


def digit_rows_figure(rows: dict[str, np.ndarray], column_titles: list[str]) -> str:
    """One row of digits per stack (labelled with its name), columns aligned across the rows."""
    n = max(len(stack) for stack in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.95, len(rows) * 1.05), squeeze=False)
    for r, (name, stack) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(stack):
                ax.imshow(stack[c], cmap="gray_r")
            if r == 0 and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    return png(fig)


def quadrant_figure(images: np.ndarray, quadrants: dict[tuple[str, str], list[int]]) -> str:
    """A grid of digit mosaics: rows by true digit, columns by predicted digit (each quadrant's stored rows)."""
    trues = sorted({t for t, _ in quadrants})
    predicted = sorted({p for _, p in quadrants})
    fig, axes = plt.subplots(
        len(trues), len(predicted), figsize=(3.2 * len(predicted), 3.4 * len(trues)), squeeze=False
    )
    for (t, p), indices in quadrants.items():
        ax = axes[trues.index(t)][predicted.index(p)]
        ax.imshow(_mosaic(images[np.asarray(indices, dtype=int)]), cmap="binary")
        ax.set_title(f"true {t}, predicted {p} ({len(indices)})", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return png(fig)


def histogram_figure(edges: np.ndarray, series: dict[str, np.ndarray]) -> str:
    """Counts per bin (one step line per series), log-scaled when the counts span decades."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, counts in series.items():
        ax.stairs(counts, edges, label=name.replace("_", " "))
    top = max(float(c.max()) for c in series.values())
    if top > 100:
        ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("count")
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def _mosaic(images: np.ndarray) -> np.ndarray:
    """Images tiled into one square-ish picture (blank tiles fill the last row)."""
    per_row = max(1, math.ceil(math.sqrt(len(images))))
    rows = -(-len(images) // per_row) if len(images) else 1
    tiles = np.zeros((rows * per_row, *images.shape[1:]), dtype=float)
    tiles[: len(images)] = images
    return (
        tiles.reshape(rows, per_row, *images.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows * images.shape[1], per_row * images.shape[2])
    )


def _integral(values: np.ndarray) -> np.ndarray:
    """The values as int64 when they are all whole numbers (JSON floats like 3.0 included)."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


# -- curves and confusion matrices -------------------------------------------------------
def curve_figures(result: dict[str, Any]) -> list[Figure]:
    """PR, ROC and precision/recall-vs-threshold figures from ``curves``/``figures_data`` entries."""
    found: list[Figure] = []
    for name, curve in _curves(result):
        keys = set(curve)
        if {"fpr", "tpr"} <= keys:
            found.append(
                Figure(
                    f"ROC curve: {name}",
                    line_figure(
                        curve["fpr"], curve["tpr"], "false positive rate", "true positive rate", curve.get("auc"), True
                    ),
                )
            )
        if {"recall", "precision"} <= keys:
            found.append(
                Figure(
                    f"Precision-recall curve: {name}",
                    line_figure(
                        curve["recall"],
                        curve["precision"],
                        "recall",
                        "precision",
                        curve.get("average_precision", curve.get("ap")),
                        False,
                    ),
                )
            )
            if isinstance(curve.get("threshold"), list) and len(curve["threshold"]) == len(curve["precision"]):
                found.append(Figure(f"Precision and recall by threshold: {name}", threshold_figure(curve)))
    return found


def _curves(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, curve dict) for every dict of lists under result["curves"] / result["figures_data"]."""
    found = []
    for top in ("curves", "figures_data"):
        value = result.get(top)
        if not isinstance(value, dict):
            continue
        if is_curve(value):
            found.append((top, value))
            continue
        for name, curve in value.items():
            if is_curve(curve):
                found.append((name, curve))
            elif isinstance(curve, dict):  # one more level: {"roc": {...}, "pr": {...}} under a model name
                found.extend(
                    (name if sub in CURVE_KINDS else f"{name} {sub.replace('_', ' ')}", inner)
                    for sub, inner in curve.items()
                    if is_curve(inner)
                )
    return found


def metric_confusion_matrices(metrics: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, np.ndarray]]:
    """(title, matrix) for every square confusion matrix anywhere in the metrics, the top-level one first."""
    found: list[tuple[str, np.ndarray]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            found.extend(metric_confusion_matrices(value, path + (str(key),)))
        elif (
            "confusion_matrix" in str(key)
            and (array := _numeric(value)) is not None
            and array.ndim == 2
            and array.shape[0] == array.shape[1] > 1
        ):
            found.append((confusion_title(path + (str(key),)), array))
    return sorted(found, key=lambda item: item[0] != "Confusion matrix")


# -- figures_data --------------------------------------------------------------------------
def figures_data_figures(data: dict[str, Any], images: ImageSource) -> list[Figure]:
    """Every figure that can be drawn from a result's ``figures_data`` (unknown entries skipped)."""
    found: list[Figure] = []
    _walk(data, (), images, found)
    return found


def _walk(node: dict[str, Any], path: tuple[str, ...], images: ImageSource, found: list[Figure]) -> None:
    """Add the node's drawable entries to ``found``, descending into dicts that are not drawable themselves."""
    notes = {key[:-5]: text for key, text in node.items() if str(key).endswith("_note") and isinstance(text, str)}
    for key, value in node.items():
        key = str(key)
        if key.endswith("_note") or is_curve(value):
            continue
        caption = next((text for prefix, text in notes.items() if key.startswith(prefix)), "")
        try:
            figure = _figure_for(path + (key,), value, node, images, caption)
        except (ValueError, TypeError, IndexError, KeyError):  # an entry of an unexpected shape: skipped
            plt.close("all")
            figure = None
        if figure is not None:
            found.append(figure)
        elif isinstance(value, dict):
            _walk(value, path + (key,), images, found)


def _figure_for(
    path: tuple[str, ...], value: Any, siblings: dict[str, Any], images: ImageSource, caption: str
) -> Figure | None:
    """The figure for one figures_data entry, or None when its shape is not one we draw."""
    if isinstance(value, dict):
        return (
            _quadrant_entry(path, value, images)
            or _digit_rows_entry(path, value, caption)
            or _histogram_entry(path, value, caption)
            or _pixel_maps_entry(path, value, caption)
        )
    array = _numeric(value)
    if array is None:
        return None
    name = " ".join(path).lower()
    if array.ndim == 2 and array.shape == (SIDE, SIDE):
        return Figure(title(path), pixel_maps_figure([("", array)]), caption)
    if array.ndim == 1 and ("coef" in name or "image" in name):
        pixels = place_pixels(array, siblings)
        return Figure(title(path), pixel_maps_figure([("", pixels)]), caption) if pixels is not None else None
    if array.ndim == 2 and min(array.shape) > 1:
        if "confusion" in name and "normalised" not in name and array.shape[0] == array.shape[1]:
            return Figure(confusion_title(path), confusion_figure(array), caption)
        axes = ("predicted", "true") if "confusion" in name else ("column", "row")
        return Figure(title(path), matrix_figure(array, title(path[-1:]), axes), caption)
    return None


def _quadrant_entry(path: tuple[str, ...], value: dict[str, Any], images: ImageSource) -> Figure | None:
    """A grid of stored images per "<true>_as_<predicted>" quadrant; the split is read from ``indices_are``."""
    quadrants = value.get("quadrants")
    if not isinstance(quadrants, dict) or not isinstance(value.get("indices_are"), str):
        return None
    cells = {
        tuple(key.split("_as_", 1)): rows for key, rows in quadrants.items() if "_as_" in key and isinstance(rows, list)
    }
    if not cells:
        return None
    split = "train" if "train" in value["indices_are"].lower() else "test"
    digits = sorted({d for cell in cells for d in cell})
    heading = f"{title(path)}: {' and '.join(f'{d}s' for d in digits)}, rows true digit, columns predicted digit"
    stack, why = images(split)
    if stack is None:
        return Figure(heading, "", why)
    if max((max(rows, default=0) for rows in cells.values()), default=0) >= len(stack):
        return Figure(heading, "", f"indices beyond the store's {len(stack):,} {split} images: figure left out")
    return Figure(
        heading,
        quadrant_figure(stack, cells),
        f"{value['indices_are']}, the first {value.get('per_quadrant', '')} of each quadrant",
    )


def _digit_rows_entry(path: tuple[str, ...], value: dict[str, Any], caption: str) -> Figure | None:
    """Two or more equally long stacks of digit images (denoise: noisy / cleaned / original) as labelled rows."""
    stacks = {key: _as_digits(item) for key, item in value.items()}
    stacks = {key: stack for key, stack in stacks.items() if stack is not None}
    if len(stacks) < 2 or len({len(stack) for stack in stacks.values()}) != 1:
        return None
    n = len(next(iter(stacks.values())))
    indices = next(
        (
            item
            for key, item in value.items()
            if key not in stacks and isinstance(item, list) and len(item) == n and all(isinstance(i, int) for i in item)
        ),
        None,
    )
    columns = [f"#{i}" for i in indices] if indices else []
    return Figure(
        f"{title(path)}: {' / '.join(stacks)}",
        digit_rows_figure(stacks, columns),
        caption or ("columns: test index" if indices else ""),
    )


def _histogram_entry(path: tuple[str, ...], value: dict[str, Any], caption: str) -> Figure | None:
    """``bin_edges`` and one or more count lists one shorter, as a step histogram."""
    edges = _numeric(value.get("bin_edges"))
    if edges is None or edges.ndim != 1:
        return None
    series = {
        key: counts
        for key, item in value.items()
        if key != "bin_edges" and (counts := _numeric(item)) is not None and counts.shape == (len(edges) - 1,)
    }
    return Figure(title(path), histogram_figure(edges, series), caption) if series else None


def _pixel_maps_entry(path: tuple[str, ...], value: dict[str, Any], caption: str) -> Figure | None:
    """A dict of 28x28 maps (e.g. one coefficient image per digit) as one row of maps."""
    maps = [(str(key), _numeric(item)) for key, item in value.items()]
    if not maps or any(m is None or m.shape not in ((SIDE, SIDE), (PIXELS,)) for _, m in maps):
        return None
    return Figure(title(path), pixel_maps_figure([(k, m.reshape(SIDE, SIDE)) for k, m in maps]), caption)


def place_pixels(values: np.ndarray, siblings: dict[str, Any]) -> np.ndarray | None:
    """A pixel vector as 28x28: 784 values as they are; fewer placed at the kept pixels (a mask or indices)."""
    if values.size == PIXELS:
        return values.reshape(SIDE, SIDE)
    for key, item in siblings.items():
        kept = _numeric(item) if any(word in str(key).lower() for word in MASK_WORDS) else None
        if kept is None or kept.ndim != 1:
            continue
        if kept.size == PIXELS and int(np.count_nonzero(kept)) == values.size:  # a boolean / 0-1 mask
            positions = np.flatnonzero(kept)
        elif kept.size == values.size and kept.dtype.kind in "iu" and kept.min() >= 0 and kept.max() < PIXELS:
            positions = kept  # indices of the kept pixels
        else:
            continue
        image = np.zeros(PIXELS)
        image[positions] = values
        return image.reshape(SIDE, SIDE)
    return None


def _as_digits(value: Any) -> np.ndarray | None:
    """A list of 784-long or 28x28 pixel lists as an (N, 28, 28) array, else None."""
    array = _numeric(value)
    if array is None or len(array) == 0:
        return None
    if array.ndim == 3 and array.shape[1:] == (SIDE, SIDE):
        return array
    if array.ndim == 2 and array.shape[1] == PIXELS:
        return array.reshape(-1, SIDE, SIDE)
    return None


def _numeric(value: Any) -> np.ndarray | None:
    """A (nested) list of numbers as an array (booleans included), else None."""
    if not isinstance(value, list):
        return None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    return array if array.dtype.kind in "biuf" and array.size else None


def is_curve(value: Any) -> bool:
    """Whether a dict holds a ROC (fpr, tpr) or precision-recall curve as lists."""
    return isinstance(value, dict) and any(
        keys <= set(value) and all(isinstance(value[k], list) for k in keys)
        for keys in ({"fpr", "tpr"}, {"precision", "recall"})
    )


def title(path: tuple[str, ...]) -> str:
    """A heading from a key path: the last key in words, its parents after a colon."""
    words = path[-1].replace("_", " ")
    head = words[:1].upper() + words[1:]
    return f"{head}: {' / '.join(path[:-1])}" if len(path) > 1 else head


def confusion_title(path: tuple[str, ...]) -> str:
    """ "Confusion matrix: <model>" where the model is the path without its confusion-matrix words."""
    parts = [p.replace("confusion_matrices", "").replace("confusion_matrix", "").strip("_") for p in path]
    model = " ".join(p for p in parts if p)
    return f"Confusion matrix: {model}" if model else "Confusion matrix"
