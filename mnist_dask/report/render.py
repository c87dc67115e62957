"""A run's ``report.html``: one self-contained page (PNG figures embedded, no scripts, no links).

Generic over whatever ``result.json`` holds: scalar and list metrics, per-model metric dicts,
lists of records (tables titled from their key), notes, timings and published-vs-ours figures
are tabulated; every confusion matrix gets its figure, and known shapes get theirs (sample and
misclassified test images, PR/ROC curves, k sweep, grid search, ``figures_data`` entries: see
:mod:`mnist_dask.report.figures`).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.report import figures

REPORT_NAME = "report.html"
MAX_MISCLASSIFIED = 40
SAMPLE_GRID = (5, 10)
INLINE_VALUES = 12  # lists up to this long are shown in full
CHAIN_KEYS = ("transform", "rerank")  # a list of dicts with these keys is a pipeline: a → b (p=1) → c
RUN_KEYS = ("job", "description", "job_file", "dataset", "store", "package_version")
#: top-level keys with a section of their own (other lists of records get a generic table)
HANDLED = {*RUN_KEYS, "model", "metrics", "notes", "curves", "figures_data", "sweep", "search", "expected", "timings_s"}
#: knn_best's ablation table: (key, heading), in order
ABLATION_COLUMNS = (
    ("ingredient", "ingredient"),
    ("features", "features"),
    ("train_rows", "train rows"),
    ("n_neighbors", "k"),
    ("weights", "weights"),
    ("idm", "IDM re-rank"),
    ("cv_score", "CV score"),
    ("test_accuracy", "test accuracy"),
    ("time_s", "time (s)"),
)


def write_report(run_dir: str | Path, store: Store | str | None = None) -> Path:
    """Render ``run_dir/report.html`` from its result.json (+ predictions.zarr and the store's images)."""
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    store = Store(store) if isinstance(store, str) else store
    if store is None and isinstance(result.get("store"), str):
        store = Store(result["store"])
    images = _Images(store)
    test_images, image_note = images("test")
    labels = images.labels.get("test")
    predicted = _predictions(run_dir, result)
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}

    sections = [_summary_section(result, image_note), *_notes_section(result.get("notes"))]
    if test_images is not None:
        sections.append(_figure_section("Sample test digits", figures.digit_grid(test_images, labels, *SAMPLE_GRID)))
    sections.extend(_nested_metric_sections(metrics))
    sections.extend(
        _figure_section(title, figures.confusion_figure(matrix))
        for title, matrix in figures.metric_confusion_matrices(metrics)
    )
    if test_images is not None and predicted is not None and len(predicted) == len(labels):
        sections.append(_figure_section(*figures.misclassified(test_images, labels, predicted, MAX_MISCLASSIFIED)))
    sections.extend(_figure_section(*figure) for figure in figures.curve_figures(result))
    if isinstance(result.get("figures_data"), dict):
        sections.extend(
            _figure_section(*figure) for figure in figures.figures_data_figures(result["figures_data"], images)
        )
    if "sweep" in result:
        sections.append(_figure_section("Test accuracy by k", figures.sweep_figure(result["sweep"])))
    sections.extend(_record_sections(result))
    if isinstance(result.get("search"), dict):
        sections.append(_search_section(result["search"]))
    if isinstance(result.get("expected"), dict):
        sections.extend(_expected_sections(result["expected"]))
    if isinstance(result.get("timings_s"), dict):
        sections.append(
            _table_section(
                "Timings per stage", ["stage", "seconds"], [[k, _seconds(v)] for k, v in result["timings_s"].items()]
            )
        )
    if isinstance(metrics.get("classification_report"), str):
        sections.append(
            f"<section><h2>Classification report</h2><pre>"
            f"{html.escape(metrics['classification_report'])}</pre></section>"
        )

    target = run_dir / REPORT_NAME
    partial = target.with_name(REPORT_NAME + ".part")
    partial.write_text(_page(result.get("job", run_dir.name), sections), encoding="utf-8")
    partial.replace(target)
    return target


def load_result(run_dir: Path) -> dict[str, Any]:
    """The run's result.json, or a one-line UserError when the folder holds no finished run."""
    from mnist_dask.jobs.records import read_run_json

    return read_run_json(
        Path(run_dir) / "result.json", "no result.json (not a finished run folder)", "cannot read the run's result"
    )


# -- data ----------------------------------------------------------------------------------
class _Images:
    """The store's raw images per split, read on first use (and the reason when they cannot be)."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.labels: dict[str, np.ndarray] = {}
        self._read: dict[str, tuple[np.ndarray | None, str]] = {}

    def __call__(self, split: str) -> tuple[np.ndarray | None, str]:
        """(raw images of the split, "") or (None, why not)."""
        if split not in self._read:
            self._read[split] = self._load(split)
        return self._read[split]

    def _load(self, split: str) -> tuple[np.ndarray | None, str]:
        """Read raw/<split>/images and labels from the store."""
        if self.store is None:
            return None, "no store recorded: image figures left out"
        try:
            images = np.asarray(self.store.read(f"raw/{split}/images").compute())
            self.labels[split] = np.asarray(self.store.read(f"raw/{split}/labels").compute())
            return images, ""
        except (UserError, OSError, KeyError) as exc:
            return None, f"store {self.store.url} unreadable ({str(exc)[:160]}): image figures left out"


def _predictions(run_dir: Path, result: dict[str, Any]) -> np.ndarray | None:
    """Predicted test labels from predictions.zarr, when the run wrote them."""
    target = run_dir / "predictions.zarr"
    if not target.is_dir():
        return None
    try:
        import zarr

        return np.asarray(zarr.open_array(str(target / "predicted"), mode="r")[:])
    except Exception:
        return None


# -- sections ------------------------------------------------------------------------------
def _summary_section(result: dict[str, Any], image_note: str) -> str:
    """Run facts, the model's settings and every top-level scalar or list metric."""
    rows = [[key, _cell(result[key])] for key in RUN_KEYS if key in result]
    parts = [_table("Run", ["", ""], rows, header=False)]
    if isinstance(result.get("model"), dict):
        parts.append(_table("Model", ["", ""], [[k, _cell(v)] for k, v in _flatten(result["model"])], header=False))
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    listed = [
        [key, _cell(value)]
        for key, value in metrics.items()
        if _is_scalar(value) or _is_vector(value)
        if key != "classification_report"
    ]
    parts.append(_table("Metrics", ["metric", "value"], listed))
    if image_note:
        parts.append(f"<p class=note>{html.escape(image_note)}</p>")
    return "<section>" + "".join(parts) + "</section>"


def _notes_section(notes: Any) -> list[str]:
    """The run's notes as a bulleted list (how our figures differ from the published ones)."""
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not notes:
        return []
    items = "".join(f"<li>{html.escape(str(note))}</li>" for note in notes)
    return [
        f"<section class=notes><h2>Notes: how our figures differ from the published ones</h2><ul>{items}</ul></section>"
    ]


def _nested_metric_sections(metrics: dict[str, Any]) -> list[str]:
    """Per-model metric dicts as tables, then the tables of records they hold (per_class, per_digit)."""
    models = {str(name): values for name, values in metrics.items() if isinstance(values, dict) and values}
    records = [table for name, values in models.items() for table in _inner_record_tables(name, values)]
    return [f"<section>{table}</section>" for table in (*_model_tables(models), *records)]


def _model_tables(models: dict[str, dict[str, Any]]) -> list[str]:
    """Models sharing the same scalar/list metrics in one model x metric table; any other model on its own."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, values in models.items():
        columns = tuple(k for k, v in values.items() if _is_scalar(v) or _is_vector(v))
        if columns:
            groups.setdefault(columns, []).append(name)
    return [
        _table(
            f"Metrics by model: {', '.join(names)}",
            ["model", *columns],
            [[n, *(_cell(models[n][c]) for c in columns)] for n in names],
        )
        if len(names) > 1
        else _table(f"Metrics: {names[0]}", ["metric", "value"], [[c, _cell(models[names[0]][c])] for c in columns])
        for columns, names in groups.items()
    ]


def _inner_record_tables(name: str, values: dict[str, Any]) -> list[str]:
    """A dict of records (per_class: {digit: {precision, ...}}) as one table, or those a model holds."""
    if all(_is_records(v) for v in values.values()):
        return [_records_table(_words(name), list(values.values()), index=(_index_heading(name), list(values)))]
    tables = []
    for key, value in values.items():
        if isinstance(value, list) and value and all(_is_records(v) for v in value):
            tables.append(_records_table(f"{name}: {_words(key)}", value))
        elif isinstance(value, dict) and value and all(_is_records(v) for v in value.values()):
            tables.append(
                _records_table(f"{name}: {_words(key)}", list(value.values()), index=(_index_heading(key), list(value)))
            )
    return tables


def _record_sections(result: dict[str, Any]) -> list[str]:
    """Top-level lists of records as tables titled from their key (knn_best's ablation specially)."""
    sections = []
    for key, value in result.items():
        if key in HANDLED or not isinstance(value, list) or not value or not all(_is_records(v) for v in value):
            continue
        if key == "ablation" and all("cv_score" in row for row in value):
            sections.append(_ablation_section(value, result.get("metrics") or {}))
        else:
            sections.append(f"<section>{_records_table(_words(key), value)}</section>")
    return sections


def _ablation_section(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    """knn_best's ablation: one row per ingredient, the chosen row (best CV score) marked."""
    columns = [(key, heading) for key, heading in ABLATION_COLUMNS if any(row.get(key) for row in rows)]
    chosen = _chosen_row(rows, metrics)
    body = [
        [_ablation_cell(key, row.get(key)) for key, _ in columns] + ["chosen" if i == chosen else ""]
        for i, row in enumerate(rows)
    ]
    caption = (
        "<p>One row per ingredient as the search added it (k and weights chosen by cross-validation on the "
        "training set). The marked row is the chosen pipeline, the best CV score; its test accuracy is the "
        "run's.</p>"
    )
    return (
        "<section>"
        + _table(
            "Ablation",
            [heading for _, heading in columns] + [""],
            body,
            marked={chosen} if chosen is not None else set(),
        )
        + caption
        + "</section>"
    )


def _chosen_row(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> int | None:
    """The row with the best CV score (the first such; among ties, one matching the run's test accuracy)."""
    scores = [row.get("cv_score") for row in rows]
    if not any(isinstance(s, (int, float)) for s in scores):
        return None
    best = max(s for s in scores if isinstance(s, (int, float)))
    tied = [i for i, s in enumerate(scores) if s == best]
    return next((i for i in tied if rows[i].get("test_accuracy") == metrics.get("test_accuracy")), tied[0])


def _ablation_cell(key: str, value: Any) -> str:
    """One ablation cell: the IDM options in words, seconds to one decimal, the rest as usual."""
    if key == "idm":
        if not isinstance(value, dict):
            return "—" if value is None else _cell(value)
        return ", ".join(f"{k} {_inline(v)}" for k, v in value.items() if k != "images") + (
            f" (on {value['images']})" if "images" in value else ""
        )
    if key == "time_s" and _is_number(value):
        return f"{value:.1f}"
    if key == "train_rows" and isinstance(value, int):
        return f"{value:,}"
    return _cell(value)


def _search_section(search: dict[str, Any]) -> str:
    """A grid search (best parameters, CV results) or a pipeline search (protocol, candidates)."""
    if isinstance(search.get("candidates"), list):
        return _candidates_section(search)
    header = html.escape(
        f"best {_cell(search.get('best_params'))}, CV accuracy {_cell(search.get('best_score'))} "
        f"(cv={_cell(search.get('cv'))}, on {_cell(search.get('dataset'))})"
    )
    results = search.get("cv_results") or {}
    columns = [c for c in results if c == "params" or c.startswith(("mean_", "std_", "rank_"))]
    n = len(next(iter(results.values()), []))
    rows = [[_cell(results[c][i]) for c in columns] for i in range(n)]
    return "<section><h2>Grid search</h2><p>" + header + "</p>" + _table("", columns, rows) + "</section>"


def _candidates_section(search: dict[str, Any]) -> str:
    """knn_best's search: its protocol, grid and options, and every candidate pipeline's CV outcome."""
    facts = [[key, _cell(search[key])] for key in ("protocol", "param_grid", "options") if key in search]
    candidates = [c for c in search["candidates"] if isinstance(c, dict)]
    idm = any(c.get("idm") for c in candidates)
    rows = [
        [
            _cell(c.get("ingredient")),
            _cell(c.get("stage")),
            *([_ablation_cell("idm", c.get("idm"))] * idm),
            _cell(c.get("best_params")),
            _cell(c.get("cv_score")),
            _cell(c.get("seconds")),
        ]
        for c in candidates
    ]
    columns = ["ingredient", "stage", *(["IDM re-rank"] if idm else []), "best parameters", "CV score", "seconds"]
    return (
        "<section>"
        + _table("Search", ["", ""], facts, header=False)
        + _table("Search candidates (cross-validated on the training set)", columns, rows)
        + "</section>"
    )


def _expected_sections(expected: dict[str, Any]) -> list[str]:
    """Published figures beside ours (lists and matrices compact), plus ours − published for big matrices."""
    rows, maps = [], []
    for key, pair in expected.items():
        pair = pair if isinstance(pair, dict) else {"published": pair}
        published, measured = pair.get("published"), pair.get("measured")
        rows.append([key, _cell(published), _cell(measured), _difference(published, measured)])
        a, b = _array(published), _array(measured)
        if a is not None and b is not None and a.shape == b.shape and a.ndim == 2 and a.size > 4:
            maps.append(
                _figure_section(
                    f"Published beside ours: {key} (ours − published)",
                    figures.matrix_figure(
                        b.astype(float) - a,
                        f"{key}: ours − published",
                        ("predicted", "true") if "confusion" in key else ("column", "row"),
                    ),
                )
            )
    return [
        _table_section("Published figures beside ours", ["figure", "published", "ours", "ours − published"], rows),
        *maps,
    ]


def _difference(published: Any, measured: Any) -> str:
    """ours − published for two numbers; max |ours − published| for equally shaped numeric lists/matrices."""
    if _is_number(published) and _is_number(measured):
        return f"{measured - published:+.4f}"
    a, b = _array(published), _array(measured)
    if a is None or b is None or a.shape != b.shape:
        return "—"
    gap = np.abs(b - a).max()
    return f"max |Δ| {_number(gap.item())}"


# -- HTML ----------------------------------------------------------------------------------
def _figure_section(title: str, png: str, caption: str = "") -> str:
    """A titled figure; without a PNG, the caption says why it is missing."""
    if not png:
        return f"<section><h2>{html.escape(title)}</h2><p class=note>{html.escape(caption)}</p></section>"
    note = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f"<section><h2>{html.escape(title)}</h2><figure>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">{note}</figure></section>'
    )


def _table_section(title: str, columns: list[str], rows: list[list[str]]) -> str:
    """A titled table in its own section."""
    return "<section>" + _table(title, columns, rows) + "</section>"


def _records_table(title: str, records: list[dict[str, Any]], index: tuple[str, list[Any]] | None = None) -> str:
    """Dicts as table rows (columns: every key in first-seen order), optionally led by an index column."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = [[_cell(record.get(c)) for c in columns] for record in records]
    if index:
        columns = [index[0], *columns]
        rows = [[str(label), *row] for label, row in zip(index[1], rows)]
    return _table(title, [str(c) for c in columns], rows)


def _table(
    title: str,
    columns: list[str],
    rows: list[list[str]],
    header: bool = True,
    marked: set[int] | frozenset[int] = frozenset(),
) -> str:
    """An HTML table (cells escaped); rows whose index is in ``marked`` get class "chosen"."""
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>" if header else ""
    body = "".join(
        ("<tr class=chosen>" if i in marked else "<tr>")
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    caption = f"<h2>{html.escape(title)}</h2>" if title else ""
    return f"{caption}<table>{head}{body}</table>"


def _cell(value: Any) -> str:
    """A value in a few characters: floats to 4 decimals, lists and matrices compact, dicts as k=v."""
    if isinstance(value, (bool, int, float)):
        return _number(value)
    if isinstance(value, list) and (array := _array(value)) is not None:
        return _compact(array)
    return _inline(value)


def _inline(value: Any) -> str:
    """A nested value in one line: numbers to 6 significant digits, [lists] elided, dicts as k=v."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return ", ".join(
            f"{k}={_inline(v) if not isinstance(v, dict) else '(' + _inline(v) + ')'}" for k, v in value.items()
        )
    if isinstance(value, list) and value and all(isinstance(v, dict) and v.keys() & CHAIN_KEYS for v in value):
        return " → ".join(_step(v) for v in value)
    if isinstance(value, list):
        shown = [_inline(v) if not isinstance(v, dict) else "(" + _inline(v) + ")" for v in value[:INLINE_VALUES]]
        more = f", … ({len(value)} items)" if len(value) > INLINE_VALUES else ""
        return "[" + ", ".join(shown) + more + "]"
    return str(value)


def _step(step: dict[str, Any]) -> str:
    """One chain step: its name, then its parameters in brackets."""
    name = next(str(step[k]) for k in CHAIN_KEYS if k in step)
    params = {k: v for k, v in step.items() if k not in CHAIN_KEYS}
    return f"{name} ({_inline(params)})" if params else name


def _compact(array: np.ndarray) -> str:
    """A numeric array in one line: short vectors in full (+ mean), long ones elided, matrices by shape."""
    if array.ndim == 1:
        values = [_number(v) for v in array.tolist()]
        if len(values) > INLINE_VALUES:
            values = values[:5] + ["…"] + values[-2:] + [f"({len(array)} values)"]
        mean = f" (mean {_number(float(array.mean()))})" if array.dtype.kind == "f" and len(array) > 1 else ""
        return ", ".join(values) + mean
    if array.ndim == 2 and array.size <= 9:
        return "[" + ", ".join("[" + ", ".join(_number(v) for v in row) + "]" for row in array.tolist()) + "]"
    shape = "×".join(str(n) for n in array.shape)
    kind = "matrix" if array.ndim == 2 else "array"
    total = f", sum {int(array.sum()):,}" if array.dtype.kind in "iu" else ""
    return f"{shape} {kind}{total}"


def _number(value: Any) -> str:
    """An int as is, a float to 4 decimals (or 4 significant digits when tiny or huge)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return f"{value:.4g}"


def _seconds(value: Any) -> str:
    """Seconds to two decimals (anything else as a cell)."""
    return f"{value:.2f}" if _is_number(value) else _cell(value)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, value) pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        pairs.extend(_flatten(value, name + ".") if isinstance(value, dict) and value else [(name, value)])
    return pairs


def _array(value: Any) -> np.ndarray | None:
    """A (nested) list of numbers (not booleans) as an array, else None."""
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


def _is_scalar(value: Any) -> bool:
    """A number, bool or string."""
    return isinstance(value, (int, float, str))


def _is_vector(value: Any) -> bool:
    """A flat list of numbers (cv_scores, support_vectors)."""
    array = _array(value)
    return array is not None and array.ndim == 1


def _is_records(value: Any) -> bool:
    """A dict of scalars, short lists or small dicts: one table row."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(v is None or _is_scalar(v) or _is_vector(v) or isinstance(v, dict) for v in value.values())
    )


def _words(key: str) -> str:
    """A key as a heading: underscores to spaces, first letter capitalised."""
    words = str(key).replace("_", " ")
    return words[:1].upper() + words[1:]


def _index_heading(key: str) -> str:
    """The heading of a dict-of-records table's key column: "class" for per_class, else the key."""
    return key[4:] if key.startswith("per_") else key


def _page(title: str, sections: list[str]) -> str:
    """The whole HTML page."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(str(title))}: mnist-dask report</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }}
h1 {{ border-bottom: 2px solid #444; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: left; font-size: .9em; }}
th {{ background: #eee; }} img {{ max-width: 100%; }} .note {{ color: #a40; }}
tr.chosen td {{ background: #e3f4e0; font-weight: bold; }}
.notes ul {{ margin: .3em 0; }} .notes li {{ margin: .2em 0; }}
figcaption {{ font-size: .85em; color: #555; }} pre {{ background: #f6f6f6; padding: .6em; }}
</style></head><body>
<h1>{html.escape(str(title))}</h1>
{"".join(sections)}
</body></html>
"""
