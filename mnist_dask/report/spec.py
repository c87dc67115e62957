"""The vocabulary of report displays: what an experiment asks its report to show, and how.

Each constructor checks its data and returns a JSON-ready dict ``{"kind": ..., "title": ..., ...}``.
An experiment returns a list of them under ``"report"`` in display order; they are stored in
``result.json`` as they are, so ``mnist-dask report RUN`` redraws a report from result.json alone.
A declaration of the wrong shape raises :class:`SpecError` in the experiment, not in the renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

Display = dict[str, Any]
Cell = str | int | float | bool | None
SIDE = 28  # inline digit images and pixel maps are 28x28
SPLITS = ("train", "test")


class SpecError(ValueError):
    """A display declared with data of the wrong shape or type."""


# -- tables and text -------------------------------------------------------------------------
def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    highlight: int | None = None,
    formats: Mapping[str, str] | None = None,
    caption: str = "",
) -> Display:
    """A table: cells are numbers, strings, booleans or None; ``highlight`` marks one row (by position).

    ``formats`` gives a column's format spec (``".1f"``, ``",d"``); floats default to 4 decimals.
    """
    columns = [str(c) for c in columns]
    cells = [[_cell(value, title) for value in row] for row in rows]
    if any(len(row) != len(columns) for row in cells):
        raise SpecError(f"table {title!r}: every row needs {len(columns)} cells")
    if highlight is not None and not 0 <= highlight < len(cells):
        raise SpecError(f"table {title!r}: highlighted row {highlight} is not one of its {len(cells)} rows")
    formats = dict(formats or {})
    if set(formats) - set(columns):
        raise SpecError(f"table {title!r}: formats for unknown columns {sorted(set(formats) - set(columns))}")
    return _display("table", title, caption, columns=columns, rows=cells, highlight=highlight, formats=formats)


def records(
    title: str, rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | None = None, **options: Any
) -> Display:
    """A table from dicts: ``columns`` maps each key shown to its heading (default: every key, as it is)."""
    columns = dict(columns) if columns is not None else {key: key for row in rows for key in row}
    return table(title, list(columns.values()), [[row.get(key) for key in columns] for row in rows], **options)


def text(title: str, body: str, caption: str = "") -> Display:
    """Preformatted text, shown as it is (a classification report, a log excerpt)."""
    if not isinstance(body, str):
        raise SpecError(f"text {title!r}: the body must be a string")
    return _display("text", title, caption, text=body)


# -- figures ---------------------------------------------------------------------------------
def confusion_matrix(
    title: str,
    matrix: ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    normalize: Literal["true", "pred"] | None = None,
    errors_only: bool = False,
    caption: str = "",
) -> Display:
    """A confusion matrix of counts (rows true, columns predicted), drawn with ConfusionMatrixDisplay.

    ``normalize`` divides each row ("true") or column ("pred") by its sum; ``errors_only`` zeroes
    the diagonal so only the errors are coloured.
    """
    counts = _numbers(matrix, 2, f"confusion matrix {title!r}")
    if counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise SpecError(f"confusion matrix {title!r}: needs a square matrix of 2 or more classes, got {counts.shape}")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise SpecError(f"confusion matrix {title!r}: needs non-negative whole counts")
    labels = [str(label) for label in labels] if labels is not None else [str(i) for i in range(len(counts))]
    if len(labels) != len(counts):
        raise SpecError(f"confusion matrix {title!r}: {len(labels)} labels for {len(counts)} classes")
    if normalize not in (None, "true", "pred"):
        raise SpecError(f"confusion matrix {title!r}: normalize must be None, 'true' or 'pred'")
    return _display(
        "confusion_matrix",
        title,
        caption,
        matrix=counts.astype(np.int64).tolist(),
        labels=labels,
        normalize=normalize,
        errors_only=bool(errors_only),
    )


def roc(name: str, fpr: ArrayLike, tpr: ArrayLike, auc: float | None = None) -> dict[str, Any]:
    """One named ROC curve (for :func:`roc_curves`)."""
    x, y = _curve(name, fpr, tpr)
    return {"name": str(name), "fpr": x, "tpr": y, "auc": _optional_number(auc, name)}


def roc_curves(title: str, curves: Sequence[Mapping[str, Any]], caption: str = "") -> Display:
    """ROC curves of :func:`roc`, on one set of axes with the chance diagonal (RocCurveDisplay)."""
    return _display("roc_curves", title, caption, curves=_series_list(title, curves, ("fpr", "tpr")))


def precision_recall(
    name: str, precision: ArrayLike, recall: ArrayLike, average_precision: float | None = None
) -> dict[str, Any]:
    """One named precision-recall curve (for :func:`precision_recall_curves`)."""
    x, y = _curve(name, recall, precision)
    return {
        "name": str(name),
        "precision": y,
        "recall": x,
        "average_precision": _optional_number(average_precision, name),
    }


def precision_recall_curves(title: str, curves: Sequence[Mapping[str, Any]], caption: str = "") -> Display:
    """Precision-recall curves of :func:`precision_recall` on one set of axes (PrecisionRecallDisplay)."""
    return _display(
        "precision_recall_curves", title, caption, curves=_series_list(title, curves, ("precision", "recall"))
    )


def line_plot(
    title: str,
    x: ArrayLike,
    series: Mapping[str, ArrayLike],
    *,
    xlabel: str = "",
    ylabel: str = "",
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    markers: bool = False,
    caption: str = "",
) -> Display:
    """Named series of y values over shared x values (precision/recall by threshold, accuracy by k)."""
    xs = _numbers(x, 1, f"line plot {title!r}: x")
    ys = _same_length_series(f"line plot {title!r}", series, len(xs), "values, one per x")
    return _display(
        "line_plot",
        title,
        caption,
        x=xs.tolist(),
        series=ys,
        xlabel=xlabel,
        ylabel=ylabel,
        xlim=_limits(xlim, title),
        ylim=_limits(ylim, title),
        markers=bool(markers),
    )


def stored_digits(
    split: str, indices: ArrayLike, *, captions: Sequence[str] | None = None, label: str = "", stage: str = "raw"
) -> dict[str, Any]:
    """A group of digits for :func:`digits`: rows ``indices`` of ``<stage>/<split>/images`` in the run's store.

    A group may be empty (its label is still shown): a confusion cell with no images, say.
    """
    if split not in SPLITS:
        raise SpecError(f"digits {label!r}: split must be one of {SPLITS}, got {split!r}")
    rows = np.asarray(indices)
    rows = _numbers(rows, 1, f"digits {label!r}: indices") if rows.size else np.zeros(0, np.int64)
    if np.any(rows < 0) or np.any(rows != np.round(rows)):
        raise SpecError(f"digits {label!r}: indices must be non-negative whole numbers")
    return {
        "label": str(label),
        "stage": str(stage),
        "split": split,
        "indices": rows.astype(np.int64).tolist(),
        "captions": _captions(captions, len(rows), label),
    }


def inline_digits(images: ArrayLike, *, captions: Sequence[str] | None = None, label: str = "") -> dict[str, Any]:
    """A group of digits for :func:`digits`, given as pixels: (n, 28, 28) or (n, 784)."""
    array = _numbers(images, None, f"digits {label!r}")
    if array.ndim == 2 and array.shape[1] == SIDE * SIDE:
        array = array.reshape(-1, SIDE, SIDE)
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE):
        raise SpecError(f"digits {label!r}: images must be (n, 28, 28) or (n, 784), got {array.shape}")
    return {"label": str(label), "images": array.tolist(), "captions": _captions(captions, len(array), label)}


def digits(title: str, groups: Sequence[Mapping[str, Any]], *, per_line: int = 10, caption: str = "") -> Display:
    """Groups of digit images (:func:`stored_digits`, :func:`inline_digits`), each starting a new line, labelled."""
    groups = [dict(group) for group in groups]
    if not groups or not all("images" in g or "indices" in g for g in groups):
        raise SpecError(f"digits {title!r}: needs groups made by stored_digits or inline_digits")
    if not any(len(g.get("images") or g.get("indices") or []) for g in groups):
        raise SpecError(f"digits {title!r}: no images to show")
    if per_line < 1:
        raise SpecError(f"digits {title!r}: per_line must be at least 1")
    return _display("digits", title, caption, groups=groups, per_line=int(per_line))


def pixel_maps(title: str, maps: Mapping[str, ArrayLike], *, diverging: bool = False, caption: str = "") -> Display:
    """Named 28x28 maps (or 784-vectors) side by side: grey digits, or diverging colours around 0 (coefficients)."""
    if not maps:
        raise SpecError(f"pixel maps {title!r}: no maps")
    shaped = {}
    for name, values in maps.items():
        array = _numbers(values, None, f"pixel maps {title!r}: {name}")
        if array.size != SIDE * SIDE or array.ndim not in (1, 2):
            raise SpecError(f"pixel maps {title!r}: {name} must be 28x28 or 784 values, got {array.shape}")
        shaped[str(name)] = array.reshape(SIDE, SIDE).tolist()
    return _display("pixel_maps", title, caption, maps=shaped, diverging=bool(diverging))


def histogram(
    title: str,
    bin_edges: ArrayLike,
    counts: Mapping[str, ArrayLike],
    *,
    xlabel: str = "",
    log: bool = False,
    caption: str = "",
) -> Display:
    """Counts already binned (one series per name, each one shorter than ``bin_edges``) as step lines."""
    edges = _numbers(bin_edges, 1, f"histogram {title!r}: bin edges")
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise SpecError(f"histogram {title!r}: bin edges must be 2 or more increasing values")
    series = _same_length_series(f"histogram {title!r}", counts, len(edges) - 1, "counts, one per bin")
    return _display("histogram", title, caption, bin_edges=edges.tolist(), counts=series, xlabel=xlabel, log=bool(log))


def heatmap(
    title: str,
    matrix: ArrayLike,
    *,
    xlabel: str = "",
    ylabel: str = "",
    diverging: bool = False,
    value_format: str = ".3g",
    caption: str = "",
) -> Display:
    """A numeric matrix as colours (annotated up to 12x12); ``diverging`` centres the colours on 0."""
    values = _numbers(matrix, 2, f"heatmap {title!r}")
    try:
        format(1.0, value_format)
    except ValueError:
        raise SpecError(f"heatmap {title!r}: {value_format!r} is not a format spec for numbers") from None
    return _display(
        "heatmap",
        title,
        caption,
        matrix=values.tolist(),
        xlabel=xlabel,
        ylabel=ylabel,
        diverging=bool(diverging),
        value_format=value_format,
    )


# -- checks ----------------------------------------------------------------------------------
def _same_length_series(what: str, series: Mapping[str, ArrayLike], length: int, unit: str) -> dict[str, list[float]]:
    """Named 1-D numeric series (as lists), at least one, each ``length`` long."""
    if not series:
        raise SpecError(f"{what}: no series")
    arrays = {str(name): _numbers(values, 1, f"{what}: {name}") for name, values in series.items()}
    if any(len(values) != length for values in arrays.values()):
        raise SpecError(f"{what}: every series needs {length} {unit}")
    return {name: values.tolist() for name, values in arrays.items()}


def _display(kind: str, title: str, caption: str, **data: Any) -> Display:
    """The JSON-ready dict every constructor returns."""
    if not isinstance(title, str) or not title.strip():
        raise SpecError(f"a {kind} display needs a title")
    return {"kind": kind, "title": title, "caption": str(caption), **data}


def _numbers(values: ArrayLike, ndim: int | None, what: str) -> np.ndarray:
    """``values`` as a non-empty numeric array of ``ndim`` dimensions (booleans and infinities refused)."""
    try:
        array = np.asarray(values)
    except ValueError:
        raise SpecError(f"{what}: ragged values") from None
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise SpecError(f"{what}: needs numbers, got {array.dtype} of shape {array.shape}")
    if ndim is not None and array.ndim != ndim:
        raise SpecError(f"{what}: needs {ndim} dimension(s), got shape {array.shape}")
    if np.any(np.isinf(array)):
        raise SpecError(f"{what}: infinite values")
    return array


def _curve(name: str, x: ArrayLike, y: ArrayLike) -> tuple[list[float], list[float]]:
    """A curve's x and y: equally long 1-D lists of numbers in [0, 1]."""
    xs, ys = _numbers(x, 1, f"curve {name!r}"), _numbers(y, 1, f"curve {name!r}")
    if len(xs) != len(ys) or len(xs) < 2:
        raise SpecError(f"curve {name!r}: needs 2 or more points with as many x as y values")
    if np.any(np.concatenate([xs, ys]) < 0) or np.any(np.concatenate([xs, ys]) > 1):
        raise SpecError(f"curve {name!r}: rates must lie in [0, 1]")
    return xs.astype(float).tolist(), ys.astype(float).tolist()


def _series_list(title: str, curves: Sequence[Mapping[str, Any]], keys: tuple[str, str]) -> list[dict[str, Any]]:
    """Curves made by the matching series constructor, at least one."""
    listed = [dict(curve) for curve in curves]
    if not listed or not all(set(keys) <= set(curve) for curve in listed):
        raise SpecError(f"{title!r}: needs one or more curves with {' and '.join(keys)}")
    return listed


def _optional_number(value: float | None, name: str) -> float | None:
    """A finite number or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise SpecError(f"curve {name!r}: the area must be a finite number, got {value!r}")
    return float(value)


def _cell(value: Any, title: str) -> Cell:
    """A table cell as a JSON scalar (numpy scalars converted)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise SpecError(f"table {title!r}: a cell must be a number, string, boolean or None, got {type(value).__name__}")


def _captions(captions: Sequence[str] | None, n: int, label: str) -> list[str]:
    """One caption per image ("" when none given)."""
    if captions is None:
        return [""] * n
    if len(captions) != n:
        raise SpecError(f"digits {label!r}: {len(captions)} captions for {n} images")
    return [str(c) for c in captions]


def _limits(limits: tuple[float, float] | None, title: str) -> list[float] | None:
    """Axis limits as [low, high] with low < high, or None."""
    if limits is None:
        return None
    low, high = (float(v) for v in limits)
    if not low < high:
        raise SpecError(f"line plot {title!r}: limits must be (low, high) with low < high")
    return [low, high]
