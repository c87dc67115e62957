"""The figure ledger: published figures beside ours, each exact, within print precision, differs or missing."""

from __future__ import annotations

import pytest

from mnist_dask.jobs.ledger import compare, counts, ledger, lookup, scored


@pytest.mark.parametrize(
    "published, measured, status",
    [
        (0.9688, 0.9688, "exact"),
        (0.9688, 0.96875, "within print precision"),  # the notebook printed 4 decimals
        (0.9688, 0.96885, "within print precision"),
        (0.9688, 0.96886, "differs"),
        (0.9716166666666666, 0.9716166666666667, "within print precision"),  # float sums in another order
        (0.9716166666666666, 0.9716166666666690, "differs"),
        ("0.9700", 0.97004, "within print precision"),  # quoted: trailing zeros count as printed digits
        ("0.9700", 0.9701, "differs"),
        (312, 312, "exact"),
        (312, 313, "differs"),
        (4.837e-3, 0.0048374, "within print precision"),
        (4.837e-3, 0.0048376, "differs"),
        ([0.95035, 0.96035, 0.9604], [0.95035, 0.96035, 0.9604], "exact"),
        ([0.95035, 0.96035, 0.9604], [0.95035, 0.96035, 0.96042], "within print precision"),
        ([0.95035, 0.96035, 0.9604], [0.95035, 0.96035], "differs"),
        ([[53892, 687], [1891, 3530]], [[53892, 687], [1891, 3530]], "exact"),
        ([[53892, 687], [1891, 3530]], [[53893, 686], [1891, 3530]], "differs"),
        ({"n_neighbors": 4, "weights": "distance"}, {"n_neighbors": 4, "weights": "distance"}, "exact"),
        ({"n_neighbors": 4, "weights": "distance"}, {"n_neighbors": 4, "weights": "uniform"}, "differs"),
        (True, True, "exact"),
        (True, 1, "differs"),
        ("  precision  recall\n5  0.97  0.99", "precision recall 5 0.9688 0.99", "within print precision"),
        ("precision recall 5 0.97 0.99", "precision recall 5 0.97 0.99", "exact"),
        ("precision recall 5 0.97 0.99", "precision recall 5 0.96 0.99", "differs"),
        ("precision recall 5 0.97", "precision f1 5 0.97", "differs"),
        (0.9688, None, "missing"),
    ],
)
def test_compare_marks_each_figure(published, measured, status):
    assert compare(published, measured) == status


def test_lookup_follows_dotted_paths_into_metrics_then_the_result():
    result = {
        "metrics": {"test_accuracy": 0.97, "per_digit": [{"f1": 0.9}, {"f1": 0.8}], "svc": {"rbf": 0.96}},
        "search": {"best_score": 0.9716},
    }
    assert lookup(result, "test_accuracy") == 0.97
    assert lookup(result, "per_digit.1.f1") == 0.8
    assert lookup(result, "svc.rbf") == 0.96
    assert lookup(result, "search.best_score") == 0.9716
    assert lookup(result, "per_digit.5.f1") is None and lookup(result, "nothing") is None


def test_ledger_gives_reasons_for_differences_and_calls_the_rest_unexplained():
    result = {"metrics": {"a": 0.5, "b": 0.2, "c": 0.125}}
    entries = ledger({"a": 0.5, "b": 0.3, "c": 0.2, "d": 1}, {"b": "notebook ran unseeded"}, result)
    assert entries["a"] == {"published": 0.5, "measured": 0.5, "status": "exact"}
    assert entries["b"]["status"] == "differs" and entries["b"]["reason"] == "notebook ran unseeded"
    assert entries["c"]["reason"] == "unexplained"
    assert entries["d"]["status"] == "missing"
    assert counts(entries) == {"exact": 1, "within print precision": 0, "differs": 2, "missing": 1}


def test_a_plain_toml_number_keeps_its_printed_digits(tmp_path):
    """0.9700 in a job file is 0.97 printed with four decimals: 0.9688 differs from it, and the record says 0.9700."""
    from mnist_dask.jobs.spec import load_job

    job_file = tmp_path / "job.toml"
    job_file.write_text('experiment = "knn"\n[expect]\ntest_accuracy = 0.9700\ncv_scores = [0.9600, 0.95]\n')
    expect = load_job(job_file).expect
    assert compare(expect["test_accuracy"], 0.9688) == "differs"
    assert compare(expect["test_accuracy"], 0.97004) == "within print precision"
    assert compare(expect["cv_scores"], [0.96004, 0.95]) == "within print precision"
    entries = ledger(expect, {}, {"metrics": {"test_accuracy": 0.9688, "cv_scores": [0.96, 0.95]}})
    assert entries["test_accuracy"]["published"] == "0.9700"
    assert entries["cv_scores"]["published"] == ["0.9600", 0.95]
    assert type(entries["cv_scores"]["published"][1]) is float


def test_scored_replaces_an_earlier_ledger_with_the_job_files_figures_as_they_are_now():
    """A run scored again holds the ledger of the [expect] and [differs] given, not its old one (none without
    [expect]); the old ledger is no figure of the run, and its timings stay last, as the driver writes them."""
    run = {"metrics": {"test_accuracy": 0.97}, "expected": {"old": {"status": "exact"}}, "ledger": {"exact": 1}}
    again = scored({"test_accuracy": 0.5, "ledger.exact": 1}, {"test_accuracy": "why"}, {**run, "timings_s": {"a": 1}})

    assert again["expected"]["test_accuracy"] == {
        "published": 0.5, "measured": 0.97, "status": "differs", "reason": "why"
    }  # fmt: skip
    assert again["expected"]["ledger.exact"]["status"] == "missing"
    assert again["ledger"] == {"exact": 0, "within print precision": 0, "differs": 1, "missing": 1}
    assert list(again)[-1] == "timings_s"
    assert scored({}, {}, run) == {"metrics": {"test_accuracy": 0.97}}
