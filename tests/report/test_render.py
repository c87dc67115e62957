"""The renderer on hand-built results: the sections every result has, declared displays in order, and a
display that cannot be drawn becoming a one-line note while the page is still written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from support import ReportPage

from mnist_dask.data.store import Store
from mnist_dask.report import spec
from mnist_dask.report.figures import confusion_values
from mnist_dask.report.render import write_report

NOTES = "Notes: how our figures differ from the published ones"


def _render(result: dict[str, Any], run_dir: Path, store: Store | None = None) -> ReportPage:
    """The report of ``result`` as result.json would hold it, parsed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = write_report(json.loads(json.dumps(result)), run_dir, store)
    assert path == run_dir / "report.html" and not (run_dir / "report.html.part").exists()
    return ReportPage(path.read_text())


def test_standard_sections_come_from_the_standard_keys(tmp_path):
    result = {
        "job": "demo",
        "description": "a <b>hand-built</b> result",
        "experiment": "knn",
        "params": {"model": {"n_neighbors": 3}},
        "package_version": "0.1.0",
        "model": {"estimator": "k-NN", "grid": {"k": 3}},
        "metrics": {
            "test_accuracy": 0.9725,
            "cv_scores": [0.9, 0.95],
            "confusion_matrix": [[5, 1], [2, 7]],
            "big_matrix": np.ones((10, 10), int).tolist(),
            "classification_report": "line one\nline two",
            "svc": {"test_accuracy": 0.9, "train_rows": 300},
            "ovr_svc": {"test_accuracy": 0.8, "train_rows": 300},
            "sgd": {"cv_scores": [0.5, 0.6]},
            "per_class": {"0": {"precision": 1.0}},
        },
        "notes": ["ours <differs>"],
        "expected": {
            "test_accuracy": {"published": 0.9688, "measured": 0.9725, "status": "differs", "reason": "a made-up gap"},
            "confusion_matrix": {
                "published": np.eye(3, dtype=int).tolist(),
                "measured": (2 * np.eye(3, dtype=int)).tolist(),
            },
        },
        "timings_s": {"ingest": 1.5, "knn": 2.25},
    }
    page = _render(result, tmp_path)
    assert page.titles == [
        "Run",
        "Model",
        "Metrics",
        "Metrics by model: svc, ovr_svc",
        "Metrics: sgd",
        NOTES,
        "Published figures beside ours",
        "Published beside ours: confusion_matrix (ours − published)",
        "Timings per stage",
    ]
    assert page.facts("Run") == {
        "job": "demo",
        "description": "a <b>hand-built</b> result",  # escaped in the page, read back as text
        "experiment": "knn",
        "params": "model=n_neighbors=3",
        "package_version": "0.1.0",
    }
    assert page.facts("Model") == {"estimator": "k-NN", "grid.k": "3"}
    assert page.facts("Metrics") == {
        "test_accuracy": "0.9725",
        "cv_scores": "0.9000, 0.9500 (mean 0.9250)",
        "confusion_matrix": "[[5, 1], [2, 7]]",
    }
    assert page.tables["Metrics by model: svc, ovr_svc"]["rows"] == [
        ["svc", "0.9000", "300"],
        ["ovr_svc", "0.8000", "300"],
    ]
    assert page.items[NOTES] == ["ours <differs>"]
    assert page.tables["Published figures beside ours"]["rows"] == [
        ["test_accuracy", "0.9688", "0.9725", "+0.0037", "differs (a made-up gap)"],
        ["confusion_matrix", "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]", "[[2, 0, 0], [0, 2, 0], [0, 0, 2]]", "max |Δ| 1", ""],
    ]
    assert page.tables["Timings per stage"]["rows"] == [["ingest", "1.50"], ["knn", "2.25"]]


def test_declared_displays_follow_in_order_tables_texts_and_figures(tmp_path):
    rng = np.random.default_rng(0)
    displays = [
        spec.table(
            "Ablation",
            ["step", "rows", "score", "time (s)"],
            [["raw", 60000, 0.97, 1.25], ["+blur", 60000, 0.98, None]],
            highlight=1,
            formats={"rows": ",d", "time (s)": ".1f"},
            caption="the marked row is chosen",
        ),
        spec.text("Classification report", "  precision <x>\n0  1.00"),
        spec.confusion_matrix("Confusion", rng.integers(0, 30, (10, 10))),
        spec.roc_curves("ROC", [spec.roc("a", [0, 0.2, 1], [0, 0.9, 1], 0.85)]),
        spec.precision_recall_curves("PR", [spec.precision_recall("a", [1, 0.8, 0.5], [0, 0.6, 1], 0.7)]),
        spec.line_plot("By k", [1, 3, 5], {"uniform": [0.9, 0.95, 0.94], "distance": [0.9, 0.96, 0.95]}),
        spec.digits("Digits", [spec.inline_digits(rng.integers(0, 256, (3, 784)), captions=["a", "b", "c"])]),
        spec.pixel_maps("Maps", {"w": rng.normal(size=784)}, diverging=True),
        spec.histogram("Histogram", np.linspace(0, 1, 6), {"x": [1, 5, 2, 0, 3]}),
        spec.heatmap("Heatmap", rng.normal(size=(4, 4)), diverging=True),
    ]
    page = _render({"job": "demo", "report": displays}, tmp_path)
    assert page.titles == ["Run", *(d["title"] for d in displays)]
    assert page.tables["Ablation"] == {
        "header": ["step", "rows", "score", "time (s)"],
        "rows": [["raw", "60,000", "0.9700", "1.2"], ["+blur", "60,000", "0.9800", "—"]],
        "highlight": 1,
    }
    assert page.captions["Ablation"] == "the marked row is chosen"
    assert page.texts["Classification report"] == "  precision <x>\n0  1.00"
    assert set(page.images) == {d["title"] for d in displays[2:]} and page.left_out == {}


def test_a_display_that_cannot_be_drawn_is_a_one_line_note(tmp_path):
    displays = [
        spec.digits("Stored digits", [spec.stored_digits("test", [0, 1])]),
        {"kind": "sunburst", "title": "From a newer version"},
        {**spec.line_plot("Broken", [1, 2], {"s": [1, 2]}), "series": {"s": [1]}},
        spec.line_plot("Fine", [1, 2], {"s": [1, 2]}),
    ]
    page = _render({"job": "demo", "report": displays}, tmp_path / "no-store")
    assert page.left_out["Stored digits"] == (
        "left out: LookupError: no store recorded for the run, so its stored images cannot be shown"
    )
    assert page.left_out["From a newer version"] == "left out: ValueError: unknown display kind 'sunburst'"
    assert page.left_out["Broken"].startswith("left out: ValueError")
    assert set(page.images) == {"Fine"}
    missing = tmp_path / "gone.zarr"
    page = _render({"job": "demo", "store": str(missing), "report": displays[:1]}, tmp_path / "store-gone")
    assert str(missing) in page.left_out["Stored digits"] and "\n" not in page.left_out["Stored digits"]


def test_confusion_values_normalise_by_row_or_column_and_zero_the_diagonal_for_errors():
    counts = np.array([[8, 2, 0], [1, 6, 3], [0, 0, 0]])
    assert confusion_values(counts, None, False).tolist() == counts.tolist()
    rows = confusion_values(counts, "true", True)
    assert rows[0].tolist() == [0, 0.2, 0] and rows[1].tolist() == [0.1, 0, 0.3] and rows[2].tolist() == [0, 0, 0]
    columns = confusion_values(counts, "pred", False)
    assert columns[:, 0].tolist() == [8 / 9, 1 / 9, 0] and columns[:, 2].tolist() == [0, 1, 0]


def test_a_report_is_replaced_whole(tmp_path):
    (tmp_path / "report.html").write_text("old")
    page = _render({"job": "again", "metrics": {"test_accuracy": 0.5}}, tmp_path)
    assert page.facts("Metrics") == {"test_accuracy": "0.5000"}
