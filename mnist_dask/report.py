"""A run's ``report.html``: one self-contained page (PNG figures embedded, no scripts, no links).

Generic over whatever ``result.json`` holds: every scalar metric, timings per stage and
published-vs-ours figures are tabulated; known keys get their own figures (confusion
matrix, misclassified test images, PR/ROC curves, k sweep, grid-search table).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, also on workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnist_dask.errors import UserError  # noqa: E402
from mnist_dask.store import Store  # noqa: E402

REPORT_NAME = "report.html"
MAX_MISCLASSIFIED = 40
SAMPLE_GRID = (5, 10)


def write_report(run_dir: str | Path, store: Store | str | None = None) -> Path:
    """Render ``run_dir/report.html`` from its result.json (+ predictions.zarr and the store's images)."""
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    store = Store(store) if isinstance(store, str) else store
    if store is None and isinstance(result.get("store"), str):
        store = Store(result["store"])
    images, labels, image_note = _test_images(store)
    predicted = _predictions(run_dir, result)

    sections = [_summary_section(result, image_note)]
    if images is not None:
        sections.append(_figure_section("Sample test digits", _digit_grid(images, labels)))
    matrix = result.get("metrics", {}).get("confusion_matrix")
    if matrix is not None:
        sections.append(_figure_section("Confusion matrix", _confusion_figure(np.asarray(matrix))))
    if images is not None and predicted is not None and len(predicted) == len(labels):
        sections.append(_misclassified_section(images, labels, predicted))
    sections.extend(_curve_sections(result))
    if "sweep" in result:
        sections.append(_figure_section("Test accuracy by k", _sweep_figure(result["sweep"])))
    if "search" in result:
        sections.append(_search_section(result["search"]))
    if "expected" in result:
        sections.append(_expected_section(result["expected"]))
    if "timings_s" in result:
        sections.append(_table_section("Timings per stage", ["stage", "seconds"],
                                       [[k, f"{v:.2f}"] for k, v in result["timings_s"].items()]))
    if "classification_report" in result.get("metrics", {}):
        sections.append(f"<section><h2>Classification report</h2><pre>"
                        f"{html.escape(result['metrics']['classification_report'])}</pre></section>")

    target = run_dir / REPORT_NAME
    partial = target.with_name(REPORT_NAME + ".part")
    partial.write_text(_page(result.get("job", run_dir.name), sections), encoding="utf-8")
    partial.replace(target)
    return target


def load_result(run_dir: Path) -> dict[str, Any]:
    """The run's result.json, or a one-line UserError when the folder holds no finished run."""
    path = Path(run_dir) / "result.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no result.json (not a finished run folder)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the run's result ({exc})") from None


# -- data ----------------------------------------------------------------------------------
def _test_images(store: Store | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Raw test images and labels from the store, or (None, None, why not) when unreadable."""
    if store is None:
        return None, None, "no store recorded: image figures left out"
    try:
        return (np.asarray(store.read("raw/test/images").compute()),
                np.asarray(store.read("raw/test/labels").compute()), "")
    except (UserError, OSError, KeyError) as exc:
        return None, None, f"store {store.url} unreadable ({str(exc)[:160]}): image figures left out"


def _predictions(run_dir: Path, result: dict[str, Any]) -> np.ndarray | None:
    """Predicted test labels from predictions.zarr, when the run wrote them."""
    target = run_dir / "predictions.zarr"
    if not target.is_dir():
        return None
    try:
        import zarr

        return np.asarray(zarr.open_array(str(target / "predicted"), mode="r")[:])
    except Exception:  # noqa: BLE001 - a damaged predictions store only drops one figure
        return None


# -- figures -------------------------------------------------------------------------------
def _digit_grid(images: np.ndarray, labels: np.ndarray) -> str:
    rows, cols = SAMPLE_GRID
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0))
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(str(label), fontsize=8)
        ax.axis("off")
    return _png(fig)


def _confusion_figure(matrix: np.ndarray) -> str:
    fig, (counts_ax, errors_ax) = plt.subplots(1, 2, figsize=(11, 4.8))
    _heatmap(counts_ax, matrix, "Counts (rows: true, columns: predicted)", "d")
    rows = matrix.sum(axis=1, keepdims=True)
    errors = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    np.fill_diagonal(errors, 0)
    _heatmap(errors_ax, errors, "Errors, row-normalised (diagonal zeroed)", ".3f")
    fig.tight_layout()
    return _png(fig)


def _heatmap(ax: Any, values: np.ndarray, title: str, fmt: str) -> None:
    ax.imshow(values, cmap="Blues" if fmt == "d" else "Reds")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ticks = range(values.shape[0])
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if values.shape[0] <= 12:
        top = values.max() or 1
        for (i, j), value in np.ndenumerate(values):
            text = format(value, fmt) if fmt == "d" or value else ""
            ax.text(j, i, text.lstrip("0") if fmt != "d" else text, ha="center", va="center", fontsize=6,
                    color="white" if value > top / 2 else "black")


def _misclassified_section(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> str:
    wrong = np.flatnonzero(labels != predicted)
    shown = wrong[:MAX_MISCLASSIFIED]
    title = f"Misclassified test images ({len(wrong):,} in all; the first {len(shown)})"
    if not len(shown):
        return f"<section><h2>{title}</h2><p>none</p></section>"
    cols = 10
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"#{index} {labels[index]}→{predicted[index]}", fontsize=7)
    return _figure_section(title, _png(fig), "title: test index, true → predicted")


def _curve_sections(result: dict[str, Any]) -> list[str]:
    """PR and ROC figures from any ``curves``/``figures_data`` entries that look like curves."""
    sections = []
    for name, curve in _curves(result):
        keys = set(curve)
        if {"fpr", "tpr"} <= keys:
            sections.append(_figure_section(f"ROC curve: {name}", _line_figure(
                curve["fpr"], curve["tpr"], "false positive rate", "true positive rate", curve.get("auc"), True)))
        if {"recall", "precision"} <= keys:
            sections.append(_figure_section(f"Precision-recall curve: {name}", _line_figure(
                curve["recall"], curve["precision"], "recall", "precision",
                curve.get("average_precision", curve.get("ap")), False)))
    return sections


def _curves(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, curve dict) for every dict of lists under result["curves"] / result["figures_data"]."""
    found = []
    for top in ("curves", "figures_data"):
        value = result.get(top)
        if not isinstance(value, dict):
            continue
        if {"fpr", "tpr"} <= set(value) or {"precision", "recall"} <= set(value):
            found.append((top, value))
            continue
        for name, curve in value.items():
            if isinstance(curve, dict):
                if {"fpr", "tpr"} <= set(curve) or {"precision", "recall"} <= set(curve):
                    found.append((name, curve))
                else:  # one more level: {"roc": {...}, "pr": {...}} under a model name
                    found.extend((f"{name} {sub}", inner) for sub, inner in curve.items()
                                 if isinstance(inner, dict) and ({"fpr", "tpr"} <= set(inner)
                                                                 or {"precision", "recall"} <= set(inner)))
    return found


def _line_figure(x: list[float], y: list[float], xlabel: str, ylabel: str, area: Any, diagonal: bool) -> str:
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
    return _png(fig)


def _sweep_figure(sweep: dict[str, Any]) -> str:
    by_k = sweep.get("test_accuracy_by_k", {})
    ks = [int(k) for k in by_k]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ks, list(by_k.values()), marker="o")
    ax.set_xlabel(f"k ({sweep.get('weights', '')} weights)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    return _png(fig)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- HTML ----------------------------------------------------------------------------------
def _summary_section(result: dict[str, Any], image_note: str) -> str:
    rows = [[key, _cell(result[key])] for key in ("job", "description", "job_file", "dataset", "store",
                                                  "package_version") if key in result]
    if isinstance(result.get("model"), dict):
        rows.append(["model", ", ".join(f"{k}={v}" for k, v in result["model"].items())])
    scalars = [[key, _cell(value)] for key, value in result.get("metrics", {}).items()
               if isinstance(value, (int, float, str)) and key != "classification_report"]
    parts = [_table("Run", ["", ""], rows, header=False), _table("Metrics", ["metric", "value"], scalars)]
    if image_note:
        parts.append(f"<p class=note>{html.escape(image_note)}</p>")
    return "<section>" + "".join(parts) + "</section>"


def _expected_section(expected: dict[str, Any]) -> str:
    rows = []
    for key, pair in expected.items():
        published, measured = pair.get("published"), pair.get("measured")
        both = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (published, measured))
        rows.append([key, _cell(published), _cell(measured), f"{measured - published:+.4f}" if both else "—"])
    return _table_section("Published figures beside ours", ["figure", "published", "ours", "ours − published"], rows)


def _search_section(search: dict[str, Any]) -> str:
    header = (f"best {html.escape(json.dumps(search.get('best_params')))}, "
              f"CV accuracy {_cell(search.get('best_score'))} (cv={search.get('cv')}, on {search.get('dataset')})")
    results = search.get("cv_results") or {}
    columns = [c for c in results if c == "params" or c.startswith(("mean_", "std_", "rank_"))]
    n = len(next(iter(results.values()), []))
    rows = [[_cell(results[c][i]) for c in columns] for i in range(n)]
    return ("<section><h2>Grid search</h2><p>" + header + "</p>"
            + _table("", columns, rows) + "</section>")


def _figure_section(title: str, png: str, caption: str = "") -> str:
    note = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f"<section><h2>{html.escape(title)}</h2><figure>"
            f"<img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{png}\">{note}</figure></section>")


def _table_section(title: str, columns: list[str], rows: list[list[str]]) -> str:
    return "<section>" + _table(title, columns, rows) + "</section>"


def _table(title: str, columns: list[str], rows: list[list[str]], header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    caption = f"<h2>{html.escape(title)}</h2>" if title else ""
    return f"{caption}<table>{head}{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _page(title: str, sections: list[str]) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(str(title))}: mnist-dask report</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }}
h1 {{ border-bottom: 2px solid #444; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: left; font-size: .9em; }}
th {{ background: #eee; }} img {{ max-width: 100%; }} .note {{ color: #a40; }}
figcaption {{ font-size: .85em; color: #555; }} pre {{ background: #f6f6f6; padding: .6em; }}
</style></head><body>
<h1>{html.escape(str(title))}</h1>
{"".join(sections)}
</body></html>
"""
