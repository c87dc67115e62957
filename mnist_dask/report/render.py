"""A run's ``report.html``: one self-contained page (PNG figures embedded, no scripts, no links).

The page holds the sections every result has, from its standard keys only (run facts,
model, metrics, notes, published figures beside ours, timings), then the displays the
experiment declared under ``"report"`` (see :mod:`mnist_dask.report.spec`), in order.
The HTML comes from ``templates/report.html.j2`` with autoescaping on.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from mnist_dask.data.store import Store
from mnist_dask.jobs.records import REPORT_FILE
from mnist_dask.report import figures, spec

RUN_KEYS = ("job", "description", "experiment", "job_file", "params", "store", "package_version")
INLINE_VALUES = 12  # lists up to this long are shown in full
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("mnist_dask.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
Section = dict[str, Any]


def write_report(result: dict[str, Any], run_dir: Path, store: Store | None = None) -> Path:
    """Write ``run_dir/report.html`` (atomically) for ``result``; stored digits come from ``store``.

    Without ``store``, the store the result names is used. A display that cannot be drawn
    (the store gone, a malformed declaration) becomes a one-line note; the page is still written.
    """
    if store is None and isinstance(result.get("store"), str):
        store = Store(result["store"])
    images = figures.StoredImages(store)
    sections = [
        *_run_sections(result),
        *_metric_sections(result.get("metrics")),
        *_notes_sections(result.get("notes")),
        *_expected_sections(result.get("expected"), images),
        *(_display_section(display, images) for display in result.get("report") or []),
        *_timing_sections(result.get("timings_s")),
    ]
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=str(result.get("job", run_dir.name)), sections=sections
    )
    target = Path(run_dir) / REPORT_FILE
    partial = target.with_name(REPORT_FILE + ".part")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


# -- the sections every result has ----------------------------------------------------------
def _run_sections(result: dict[str, Any]) -> list[Section]:
    """The run's facts, and the model's settings (nested keys dotted)."""
    sections = [_facts("Run", [(key, result[key]) for key in RUN_KEYS if key in result])]
    if isinstance(result.get("model"), dict):
        sections.append(_facts("Model", _flatten(result["model"])))
    return sections


def _metric_sections(metrics: Any) -> list[Section]:
    """Scalar and list metrics in one table; each dict of them (one model's) in its own, alike dicts together."""
    if not isinstance(metrics, dict):
        return []
    sections = [_facts("Metrics", [(k, v) for k, v in metrics.items() if _shown(v)], ("metric", "value"))]
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, values in metrics.items():
        columns = tuple(k for k, v in values.items() if _shown(v)) if isinstance(values, dict) else ()
        if columns:
            groups.setdefault(columns, []).append(name)
    for columns, names in groups.items():
        if len(names) == 1:
            sections.append(
                _facts(f"Metrics: {names[0]}", [(c, metrics[names[0]][c]) for c in columns], ("metric", "value"))
            )
        else:
            rows = [[name, *(_cell(metrics[name][c]) for c in columns)] for name in names]
            sections.append(_table(f"Metrics by model: {', '.join(names)}", ["model", *columns], rows))
    return sections


def _notes_sections(notes: Any) -> list[Section]:
    """The run's notes (how our figures differ from the published ones) as a list."""
    notes = [notes] if isinstance(notes, str) else notes
    if not isinstance(notes, list) or not notes:
        return []
    return [
        {
            "kind": "list",
            "title": "Notes: how our figures differ from the published ones",
            "items": notes,
            "caption": "",
        }
    ]


def _expected_sections(expected: Any, images: figures.StoredImages) -> list[Section]:
    """Published figures beside ours, and for each matrix of them a map of ours − published."""
    if not isinstance(expected, dict) or not expected:
        return []
    rows, maps = [], []
    for key, pair in expected.items():
        published, measured = (pair.get("published"), pair.get("measured")) if isinstance(pair, dict) else (pair, None)
        entry = pair if isinstance(pair, dict) else {}
        status = str(entry.get("status", "")) + (f" ({entry['reason']})" if entry.get("reason") else "")
        rows.append([key, _cell(published), _cell(measured), _difference(published, measured), status])
        a, b = _array(published), _array(measured)
        if a is not None and b is not None and a.shape == b.shape and a.ndim == 2 and a.size > 4:
            title = f"Published beside ours: {key} (ours − published)"
            difference = spec.heatmap(title, b - a, xlabel="column", ylabel="row", diverging=True, value_format=".0f")
            maps.append(_display_section(difference, images))
    columns = ["figure", "published", "ours", "ours − published", "status"]
    return [_table("Published figures beside ours", columns, rows), *maps]


def _timing_sections(timings: Any) -> list[Section]:
    """Seconds per stage."""
    if not isinstance(timings, dict) or not timings:
        return []
    return [_table("Timings per stage", ["stage", "seconds"], [[k, _cell(v, ".2f")] for k, v in timings.items()])]


# -- declared displays -----------------------------------------------------------------------
def _display_section(display: Any, images: figures.StoredImages) -> Section:
    """A declared display as a section: a table, text, a figure, or a note saying why it is left out."""
    title = str(display.get("title", "(untitled)")) if isinstance(display, dict) else "(not a display)"
    try:
        kind = display["kind"]
        if kind == "table":
            formats = display.get("formats") or {}
            column_formats = [formats.get(c, "") for c in display["columns"]]
            rows = [[_cell(v, f) for v, f in zip(row, column_formats)] for row in display["rows"]]
            return _table(title, display["columns"], rows, display.get("caption", ""), display.get("highlight"))
        if kind == "text":
            return {"kind": "text", "title": title, "text": display["text"], "caption": display.get("caption", "")}
        if kind not in figures.DRAWERS:
            raise ValueError(f"unknown display kind {kind!r}")
        png = figures.draw(display, images)
        return {"kind": "figure", "title": title, "png": png, "caption": display.get("caption", "")}
    except Exception as exc:  # one display that cannot be drawn must not cost the report
        reason = " ".join(str(exc).split())[:200]
        return {"kind": "note", "title": title, "text": f"left out: {type(exc).__name__}: {reason}", "caption": ""}


# -- sections and cells ----------------------------------------------------------------------
def _table(
    title: str, columns: list[str], rows: list[list[str]], caption: str = "", highlight: int | None = None
) -> Section:
    """A table section (cells already formatted)."""
    return {
        "kind": "table",
        "title": title,
        "columns": columns,
        "rows": rows,
        "caption": caption,
        "highlight": highlight,
        "header": True,
    }


def _facts(title: str, pairs: list[tuple[str, Any]], columns: tuple[str, str] | None = None) -> Section:
    """A two-column key/value table (headless unless ``columns`` are given)."""
    return {**_table(title, list(columns or ()), [[str(k), _cell(v)] for k, v in pairs]), "header": bool(columns)}


def _cell(value: Any, fmt: str = "") -> str:
    """A value in a few characters: numbers by ``fmt`` (floats to 4 decimals by default), lists compact."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if fmt and isinstance(value, (int, float)) and math.isfinite(value):
        with contextlib.suppress(ValueError):  # a format for another type: the default below
            return format(value, fmt)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list) and (array := _array(value)) is not None:
        return _compact(array)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def _number(value: float) -> str:
    """A float to 4 decimals (4 significant digits when tiny or huge)."""
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return f"{value:.4g}"


def _compact(array: np.ndarray) -> str:
    """A numeric array in one line: vectors in full (long ones elided, floats + mean), small matrices in full."""
    if array.ndim == 1:
        values = [_cell(v) for v in array.tolist()]
        if len(values) > INLINE_VALUES:
            values = [*values[:5], "…", *values[-2:], f"({len(array)} values)"]
        mean = f" (mean {_number(float(array.mean()))})" if array.dtype.kind == "f" and len(array) > 1 else ""
        return ", ".join(values) + mean
    if array.ndim == 2 and array.size <= 9:
        return "[" + ", ".join("[" + ", ".join(_cell(v) for v in row) + "]" for row in array.tolist()) + "]"
    total = f", sum {int(array.sum()):,}" if array.dtype.kind in "iu" else ""
    return f"{'×'.join(str(n) for n in array.shape)} array{total}"


def _difference(published: Any, measured: Any) -> str:
    """ours − published for two numbers; max |ours − published| for equally shaped arrays; else "—"."""
    if _is_number(published) and _is_number(measured):
        return f"{measured - published:+.4f}"
    a, b = _array(published), _array(measured)
    if a is None or b is None or a.shape != b.shape:
        return "—"
    return f"max |Δ| {_cell(np.abs(b - a).max().item())}"


def _shown(value: Any) -> bool:
    """Whether a metric goes in a metrics table: a number, a one-line string, or a flat or small numeric list."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and "\n" not in value):
        return True
    array = _array(value)
    return array is not None and (array.ndim == 1 or array.size <= 9)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, value) pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        pairs.extend(_flatten(value, name + ".") if isinstance(value, dict) and value else [(name, value)])
    return pairs


def _array(value: Any) -> np.ndarray | None:
    """A (nested) list of numbers, not booleans, as an array; else None."""
    if not isinstance(value, list) or not value:
        return None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    return array if array.dtype.kind in "iuf" else None


def _is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
