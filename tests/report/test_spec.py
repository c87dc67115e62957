"""The display vocabulary: constructors return JSON-ready dicts and refuse data of the wrong shape."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mnist_dask.report import spec
from mnist_dask.report.spec import SpecError


def test_displays_are_json_ready_and_survive_a_round_trip():
    displays = [
        spec.table("t", ["a", "b"], [[np.int64(1), np.float32(0.5)]], highlight=0, formats={"b": ".2f"}),
        spec.confusion_matrix("c", np.eye(3, dtype=np.int64) * 4, normalize="true", errors_only=True),
        spec.roc_curves("r", [spec.roc("m", np.array([0, 0.5, 1]), np.array([0, 0.9, 1]), np.float64(0.9))]),
        spec.digits("d", [spec.stored_digits("test", np.arange(3)), spec.inline_digits(np.zeros((2, 784)))]),
        spec.pixel_maps("p", {"w": np.linspace(-1, 1, 784)}, diverging=True),
    ]
    assert json.loads(json.dumps(displays)) == displays
    assert displays[0]["rows"] == [[1, 0.5]] and type(displays[0]["rows"][0][0]) is int
    assert displays[1]["matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]] and displays[1]["labels"] == ["0", "1", "2"]
    assert displays[3]["groups"][0] == {
        "label": "",
        "stage": "raw",
        "split": "test",
        "indices": [0, 1, 2],
        "captions": ["", "", ""],
    }
    assert np.array(displays[3]["groups"][1]["images"]).shape == (2, 28, 28)
    assert np.array(displays[4]["maps"]["w"]).shape == (28, 28)


def test_records_builds_a_table_from_dicts_with_chosen_headings():
    table = spec.records("r", [{"k": 1, "score": 0.9, "extra": "x"}], {"k": "neighbours", "score": "CV score"})
    assert table["columns"] == ["neighbours", "CV score"] and table["rows"] == [[1, 0.9]]
    assert spec.records("r", [{"a": 1}, {"b": 2}])["rows"] == [[1, None], [None, 2]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: spec.table("t", ["a", "b"], [[1]]), "every row needs 2 cells"),
        (lambda: spec.table("t", ["a"], [[[1, 2]]]), "a cell must be"),
        (lambda: spec.table("t", ["a"], [[1]], highlight=1), "highlighted row 1"),
        (lambda: spec.table("t", ["a"], [[1]], formats={"b": ".1f"}), "formats for unknown columns"),
        (lambda: spec.table(" ", ["a"], [[1]]), "needs a title"),
        (lambda: spec.confusion_matrix("c", [[1, 2, 3]]), "square matrix"),
        (lambda: spec.confusion_matrix("c", [[1, -2], [0, 1]]), "non-negative whole counts"),
        (lambda: spec.confusion_matrix("c", [[1, 0.5], [0, 1]]), "non-negative whole counts"),
        (lambda: spec.confusion_matrix("c", np.eye(2), labels=["a"]), "1 labels for 2 classes"),
        (lambda: spec.confusion_matrix("c", np.eye(2), normalize="all"), "normalize must be"),  # type: ignore[arg-type]
        (lambda: spec.roc("m", [0, 1], [0, 0.5, 1]), "as many x as y"),
        (lambda: spec.roc("m", [0, 2], [0, 1]), "in [0, 1]"),
        (lambda: spec.roc("m", [0, 1], [0, 1], auc=float("nan")), "finite number"),
        (lambda: spec.roc_curves("r", []), "one or more curves"),
        (lambda: spec.precision_recall_curves("p", [spec.roc("m", [0, 1], [0, 1])]), "precision and recall"),
        (lambda: spec.line_plot("l", [1, 2], {"s": [1, 2, 3]}), "every series needs 2 values"),
        (lambda: spec.line_plot("l", [1, 2], {}), "no series"),
        (lambda: spec.line_plot("l", [1, 2], {"s": [1, np.inf]}), "infinite"),
        (lambda: spec.line_plot("l", [1, 2], {"s": [1, 2]}, xlim=(2, 1)), "low < high"),
        (lambda: spec.stored_digits("valid", [1]), "split must be one of"),
        (lambda: spec.stored_digits("test", [-1]), "non-negative whole"),
        (lambda: spec.stored_digits("test", [1, 2], captions=["a"]), "1 captions for 2 images"),
        (lambda: spec.inline_digits(np.zeros((2, 27, 27))), "(n, 28, 28) or (n, 784)"),
        (lambda: spec.digits("d", []), "needs groups"),
        (lambda: spec.digits("d", [spec.stored_digits("test", [])]), "no images"),
        (lambda: spec.digits("d", [spec.stored_digits("test", [1])], per_line=0), "per_line"),
        (lambda: spec.pixel_maps("p", {"w": np.zeros(100)}), "28x28 or 784"),
        (lambda: spec.pixel_maps("p", {}), "no maps"),
        (lambda: spec.histogram("h", [0, 1, 2], {"c": [1, 2, 3]}), "2 counts, one per bin"),
        (lambda: spec.histogram("h", [0, 2, 1], {"c": [1, 2]}), "increasing"),
        (lambda: spec.heatmap("h", [1, 2, 3]), "2 dimension"),
        (lambda: spec.heatmap("h", [[1.0]], value_format="%d"), "not a format spec"),
        (lambda: spec.text("t", 3), "must be a string"),  # type: ignore[arg-type]
        (lambda: spec.line_plot("l", ["a", "b"], {"s": [1, 2]}), "needs numbers"),
        (lambda: spec.line_plot("l", [[1], [2, 3]], {"s": [1, 2]}), "ragged"),
    ],
)
def test_bad_declarations_fail_in_the_experiment(make, message):
    with pytest.raises((SpecError, ValueError), match=re.escape(message)):
        make()


def test_spec_errors_are_value_errors_naming_the_display():
    with pytest.raises(ValueError, match="'Confusion matrix: SGD'"):
        spec.confusion_matrix("Confusion matrix: SGD", [[1]])
