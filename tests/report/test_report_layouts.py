"""report.html for every experiment's result.json layout, without running the experiments.

tests/report/layouts/ holds the result.json of real experiment runs (binary_5_detector,
zero_detector, multiclass_sgd10000, svm_kernels_10000, error_analysis, multilabel, denoise,
knn_grid_search, knn_best_previous), their long lists trimmed (curve points evenly thinned, image
pixels rounded, at most 4 denoise examples, 50 misclassified indices) with the structure unchanged.
knn_best_idm.json is the result.json of the full knn_best run with the +IDM ingredient (0.9900),
untrimmed.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mnist_dask.report.render import write_report

LAYOUTS = Path(__file__).resolve().parent / "layouts"
NOTES_TITLE = "Notes: how our figures differ from the published ones"


class _Page(HTMLParser):
    """A report's section titles, tables (title -> rows of (class, cell texts)), notes and images (title -> PNG)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.titles: list[str] = []
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.images: dict[str, Image.Image] = {}
        self.notes: list[str] = []
        self.text: dict[str, str] = {}  # title -> the section's paragraphs and captions
        self._tag: list[str] = []
        self._table: list[tuple[str, list[str]]] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag.append(tag)
        values = dict(attrs)
        if tag == "h2":
            self.titles.append("")
        elif tag == "table":
            self._table = self.tables.setdefault(self.titles[-1] if self.titles else "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append((values.get("class") or "", []))
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1][1].append("")
        elif tag == "li":
            self.notes.append("")
        elif tag == "img":
            src = values.get("src") or ""
            assert src.startswith("data:image/png;base64,"), src[:60]
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
            image.load()
            assert image.format == "PNG"
            assert values.get("alt") == self.titles[-1]
            self.images[self.titles[-1]] = image

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        while self._tag and self._tag.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        where = self._tag[-1] if self._tag else ""
        if where == "h2":
            self.titles[-1] += data
        elif where in ("td", "th") and self._table:
            self._table[-1][1][-1] += data
        elif where == "li":
            self.notes[-1] += data
        elif where in ("p", "figcaption") and self.titles:
            self.text[self.titles[-1]] = self.text.get(self.titles[-1], "") + data

    def rows(self, title: str) -> list[list[str]]:
        """The table's data rows (the header row left out)."""
        return [cells for _, cells in self.tables[title][1:]]

    def column(self, title: str, heading: str) -> dict[str, str]:
        """First cell -> the cell under ``heading``, for every data row."""
        header = self.tables[title][0][1]
        return {cells[0]: cells[header.index(heading)] for cells in self.rows(title)}


def _layout(name: str) -> dict[str, Any]:
    """A stored result.json layout."""
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def _render(result: dict[str, Any], run_dir: Path, store: Any = None) -> _Page:
    """write_report on a run folder holding ``result``; without a store, none is recorded either."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if store is None:
        result = {k: v for k, v in result.items() if k != "store"}
    (run_dir / "result.json").write_text(json.dumps(result))
    page = write_report(run_dir, store).read_text()
    assert "<script" not in page.lower()
    parsed = _Page(page)
    for title, image in parsed.images.items():
        assert image.size[0] > 50 and image.size[1] > 50, title
        assert np.asarray(image.convert("L")).std() > 5, f"{title}: blank figure"
    return parsed


def _colours(image: Image.Image) -> tuple[float, float]:
    """Fractions of clearly red and clearly blue pixels."""
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    red = (rgb[..., 0] - rgb[..., 2] > 40).mean()
    blue = (rgb[..., 2] - rgb[..., 0] > 40).mean()
    return float(red), float(blue)


@pytest.mark.parametrize("name", sorted(p.stem for p in LAYOUTS.glob("*.json")))
def test_every_layout_renders_with_real_images(name, store, tmp_path):
    result = _layout(name)
    page = _render(result, tmp_path / name, store)
    assert page.titles[:3] == ["Run", "Model", "Metrics"]
    assert "Sample test digits" in page.images
    assert ("Published figures beside ours" in page.tables) == ("expected" in result)
    assert "Timings per stage" in page.tables
    if "notes" in result:
        assert page.titles[3] == NOTES_TITLE and page.notes == result["notes"]
    for key, value in result["metrics"].items():  # every scalar or flat list metric is in the summary
        if isinstance(value, (int, float)) or (isinstance(value, list) and not isinstance(value[0], list)):
            assert key in page.column("Metrics", "value")


def test_binary_5_detector_nested_metrics_curves_and_list_expectations(tmp_path):
    page = _render(_layout("binary_5_detector"), tmp_path / "run")
    assert page.column("Metrics: random_forest", "value") == {
        "precision": "0.9903",
        "recall": "0.8701",
        "f1": "0.9264",
        "roc_auc": "0.9985",
        "cv_scores": "0.9889, 0.9866, 0.9870 (mean 0.9875)",
    }
    assert page.column("Metrics", "value")["cv_scores"] == "0.9624, 0.9633, 0.9617 (mean 0.9625)"
    assert {
        "Confusion matrix",
        "Confusion matrix: random_forest",
        "ROC curve: sgd",
        "ROC curve: random_forest",
        "Precision-recall curve: sgd",
        "Precision and recall by threshold: sgd",
    } <= set(page.images)
    expected = {row[0]: row[1:] for row in page.rows("Published figures beside ours")}
    assert expected["cv_scores"] == [
        "0.9504, 0.9604, 0.9604 (mean 0.9570)",
        "0.9624, 0.9633, 0.9617 (mean 0.9625)",
        "max |Δ| 0.0121",
    ]
    assert expected["confusion_matrix"] == [
        "[[53892, 687], [1891, 3530]]",
        "[[54134, 445], [1807, 3614]]",
        "max |Δ| 242",
    ]
    assert expected["precision"][2] == "+0.0533"
    assert len(page.notes) == 2 and page.notes[0].startswith("Unshuffled 3-fold CV")
    assert "Sample test digits" not in page.images and "no store recorded" in "".join(page.text.values())


def test_zero_detector_coefficient_image_is_diverging_28x28(tmp_path):
    page = _render(_layout("zero_detector"), tmp_path / "run")
    red, blue = _colours(page.images["Coefficient image"])
    assert red > 0.02 and blue > 0.02  # positive and negative weights in diverging colours
    assert page.text["Coefficient image"].startswith("SGD coefficients on the standardised selected pixels")
    red, blue = _colours(page.images["Mean predicted zero image"])
    assert red < 0.01 and blue < 0.01  # an ordinary grey digit
    assert {"Confusion matrix", "Proba zero histogram"} <= set(page.images)
    assert "Misclassified test indices" not in page.titles  # plain index lists are skipped silently


def test_coefficient_vector_shortened_by_variance_threshold_is_placed_back(tmp_path):
    result = _layout("zero_detector")
    image = np.asarray(result["figures_data"]["coefficient_image"]).reshape(-1)
    kept = np.flatnonzero(image != 0)
    assert 600 < len(kept) < 784
    result["figures_data"]["coefficient_image"] = image[kept].tolist()
    result["figures_data"]["selected_pixels"] = kept.tolist()
    placed = _render(result, tmp_path / "indices").images["Coefficient image"]
    del result["figures_data"]["selected_pixels"]
    result["figures_data"]["support_mask"] = (image != 0).tolist()
    masked = _render(result, tmp_path / "mask").images["Coefficient image"]
    assert np.array_equal(np.asarray(placed), np.asarray(masked)) and min(_colours(placed)) > 0.02
    del result["figures_data"]["support_mask"]  # neither: a vector that cannot be placed is skipped
    assert "Coefficient image" not in _render(result, tmp_path / "neither").titles


def test_multiclass_models_per_digit_and_every_confusion_matrix(tmp_path):
    page = _render(_layout("multiclass_sgd10000"), tmp_path / "run")
    svc = page.tables["Metrics by model: svc, ovr_svc"]
    assert svc[0][1] == ["model", "test_accuracy", "train_rows", "f1_macro", "binary_classifiers"]
    assert svc[1][1] == ["svc", "0.9302", "2000", "0.9293", "45"]
    assert page.column("Metrics: sgd", "value")["scaled_cv_scores"] == "0.8917, 0.9106, 0.8872 (mean 0.8965)"
    per_digit = page.tables["logistic_ovr: Per digit"]
    assert per_digit[0][1] == ["digit", "accuracy", "f1", "mean_neg_proba", "mean_pos_proba"]
    assert [row[0] for row in page.rows("logistic_ovr: Per digit")] == [str(d) for d in range(10)]
    assert {
        "Confusion matrix: logistic_ovr",
        "Confusion matrix: small_sample knn",
        "Confusion matrix: small_sample gaussian_nb",
        "Confusion matrix: small_sample logistic",
        "Coefficient images: logistic_ovr",
    } <= set(page.images)
    counts_and_errors = page.images["Confusion matrix: logistic_ovr"]
    assert counts_and_errors.size[0] > 1.8 * counts_and_errors.size[1]  # counts beside row-normalised errors
    assert len(page.notes) == 3


def test_svm_kernels_one_model_by_metric_table_and_four_confusion_matrices(tmp_path):
    page = _render(_layout("svm_kernels_10000"), tmp_path / "run")
    table = page.column("Metrics by model: poly, rbf, sigmoid, poly_variance_threshold", "test_accuracy")
    assert table == {"poly": "0.9408", "rbf": "0.9401", "sigmoid": "0.8450", "poly_variance_threshold": "0.9506"}
    vectors = page.column("Metrics by model: poly, rbf, sigmoid, poly_variance_threshold", "support_vectors")
    assert vectors["poly"].startswith("1354, 1343, 1983, 2053") and "mean" not in vectors["poly"]
    assert {f"Confusion matrix: {m}" for m in ("poly", "rbf", "sigmoid", "poly_variance_threshold")} <= set(page.images)
    assert page.notes[0].startswith("trained on the first 10,000 training images")


def test_error_analysis_heatmaps_and_three_five_grid_from_training_images(store, tmp_path):
    result = _layout("error_analysis")
    page = _render(result, tmp_path / "run", store)
    grid = "Three five grid: 3s and 5s, rows true digit, columns predicted digit"
    assert {
        "Confusion matrix",
        "Confusion matrix row normalised errors",
        "Confusion matrix column normalised errors",
        grid,
        "Published beside ours: confusion_matrix (ours − published)",
    } <= set(page.images)
    assert page.text[grid] == "training-set row indices, the first 25 of each quadrant"
    pixels = 255 - np.asarray(page.images[grid].convert("L"), dtype=float)  # ink
    height, width = pixels.shape
    for quadrant in (
        pixels[: height // 2, : width // 2],
        pixels[: height // 2, width // 2 :],
        pixels[height // 2 :, : width // 2],
        pixels[height // 2 :, width // 2 :],
    ):
        assert (quadrant > 128).mean() > 0.05  # 25 digits in each quadrant
    assert page.text["Confusion matrix row normalised errors"].startswith("rows are true digits")
    expected = {row[0]: row[1:] for row in page.rows("Published figures beside ours")}
    assert (
        expected["confusion_matrix"][0] == "10×10 matrix, sum 60,000"
        and expected["confusion_matrix"][2] == "max |Δ| 34"
    )
    page = _render(result, tmp_path / "no-store")  # without a store: the grid is left out with a note
    assert grid in page.titles and grid not in page.images and "image figures left out" in page.text[grid]
    assert "Confusion matrix row normalised errors" in page.images


def test_denoise_examples_as_three_labelled_rows(tmp_path):
    page = _render(_layout("denoise"), tmp_path / "run")
    figure = page.images["Examples: noisy / cleaned / original"]
    assert page.text["Examples: noisy / cleaned / original"] == "columns: test index"
    ink = (np.asarray(figure.convert("L")) < 128).mean(axis=1)
    assert ink.mean() > 0.02
    assert page.column("Metrics", "value")["psnr_db"] == "14.6525"


def test_multilabel_list_metrics_and_notes(tmp_path):
    page = _render(_layout("multilabel"), tmp_path / "run")
    metrics = page.column("Metrics", "value")
    assert metrics["label_support"] == "18065, 30508"
    assert metrics["exact_match_cv_scores"] == "0.9740, 0.9764, 0.9771 (mean 0.9758)"
    assert page.images == {} and len(page.notes) == 1  # misclassified_indices alone draws nothing


def test_knn_grid_search_per_class_and_search_tables(tmp_path):
    page = _render(_layout("knn_grid_search"), tmp_path / "run")
    assert page.tables["Per class"][0][1] == ["class", "precision", "recall", "f1", "support"]
    assert page.column("Per class", "support")["5"] == "892"
    assert len(page.rows("Grid search")) == 6 and "Confusion matrix" in page.images
    assert "Classification report" in page.titles and NOTES_TITLE not in page.titles


def _ablation(page: _Page) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The ablation table's header, rows and the rows marked as chosen."""
    table = page.tables["Ablation"]
    return table[0][1], [cells for _, cells in table[1:]], [cells for cls, cells in table[1:] if cls == "chosen"]


def test_knn_best_ablation_marks_the_chosen_row(tmp_path):
    result = _layout("knn_best_previous")
    page = _render(result, tmp_path / "run")
    header, rows, chosen = _ablation(page)
    assert header == [
        "ingredient",
        "features",
        "train rows",
        "k",
        "weights",
        "CV score",
        "test accuracy",
        "time (s)",
        "",
    ]
    assert [row[0] for row in rows] == ["raw", "+deskew", "+blur", "+PCA", "+shifts", "+rotations"]
    # +shifts and +rotations tie on CV score; the first (the job's max) is the chosen one, as its test accuracy says
    assert chosen == [["+shifts", "40", "300,000", "6", "distance", "0.9883", "0.9865", "98.3", "chosen"]]
    assert f"{result['metrics']['test_accuracy']:.4f}" == chosen[0][6]
    assert len(page.rows("Search candidates (cross-validated on the training set)")) == 14


def test_knn_best_ablation_with_an_idm_row(tmp_path):
    result = _layout("knn_best_idm")
    page = _render(result, tmp_path / "run")
    header, rows, chosen = _ablation(page)
    assert header[5] == "IDM re-rank" and rows[0][5] == "—"
    assert chosen == [
        [
            "+IDM",
            "40",
            "60,000",
            "1",
            "uniform",
            "warp 1, context 1, candidates 10 (on derived/deskew+blur1)",
            "0.9914",
            "0.9900",
            "14.2",
            "chosen",
        ]
    ]
    assert f"{result['metrics']['test_accuracy']:.4f}" == chosen[0][7]
    candidates = page.tables["Search candidates (cross-validated on the training set)"]
    assert candidates[0][1][2] == "IDM re-rank" and candidates[-1][1][0] == "+IDM"
