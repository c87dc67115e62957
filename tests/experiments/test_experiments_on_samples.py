"""Issue 5's experiment jobs, run for real on real MNIST with small samples on a two-worker cluster.

Each test runs a job through :func:`mnist_dask.jobs.driver.run_job` (with conftest's module ``client``
and ``store`` fixtures) and checks its figures against scikit-learn computed directly in the
test on the same rows, then the report.html the run wrote: every display the experiment declared
is drawn (its PNG decodes and is not blank) or tabulated, and its tables hold the run's metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from support import ReportPage

from mnist_dask.data.store import Store
from mnist_dask.experiments import EXPERIMENTS
from mnist_dask.experiments.knn_outputs import add_noise, multilabel_targets, neighbour_mode
from mnist_dask.jobs.driver import run_job
from mnist_dask.jobs.records import PENDING_OUTPUTS
from mnist_dask.jobs.spec import load_job, parse_job
from mnist_dask.report.figures import confusion_values

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "jobs").glob("*.toml"))
ISSUE_5 = {"binary_5_detector", "zero_detector", "multiclass", "svm_kernels", "error_analysis", "multilabel", "denoise"}


@pytest.fixture(scope="module")
def data(mnist) -> dict[str, np.ndarray]:
    """Real MNIST flattened to (N, 784) float64 like the notebooks' X, with uint8 labels."""
    return {
        "X": mnist["train_images"].reshape(-1, 784).astype(np.float64),
        "y": mnist["train_labels"],
        "X_test": mnist["test_images"].reshape(-1, 784).astype(np.float64),
        "y_test": mnist["test_labels"],
    }


def _run(experiment: str, params: dict, store: Store, client: Client, tmp_path: Path) -> tuple[dict, ReportPage]:
    """Run an experiment job built from ``params``; check result.json holds the returned result and the report
    shows every declared display, none left out; return the result and the parsed report."""
    job = parse_job({"experiment": experiment, "params": params}, str(tmp_path / f"{experiment}.toml"))
    result = run_job(job, store, client, tmp_path / "run", log=lambda line: None)
    stored = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stored["metrics"] == json.loads(json.dumps(result["metrics"]))
    assert stored["report"] == json.loads(json.dumps(result["report"]))
    assert "figures_data" not in stored and "curves" not in stored
    page = ReportPage((tmp_path / "run" / "report.html").read_text())
    titles = [display["title"] for display in stored["report"]]
    assert page.titles[-len(titles) - 1 : -1] == titles  # in order, before the timings
    assert page.left_out == {}
    figures = [d["title"] for d in stored["report"] if d["kind"] not in ("table", "text")]
    assert set(page.images) >= set(figures)
    assert page.facts("Run")["experiment"] == experiment
    return result, page


def _display(result: dict, title: str) -> dict:
    """The declared display titled ``title``."""
    return next(display for display in result["report"] if display["title"] == title)


def _metric(value: float) -> str:
    """A metric as the report writes it."""
    return f"{value:.4f}"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_job_parses(path):
    job = load_job(path)
    if job.experiment is not None:
        assert job.experiment in EXPERIMENTS
    if job.experiment in ISSUE_5 - {"denoise"}:  # denoise has no published figure
        assert job.expect and job.name == job.experiment


def test_every_issue_5_experiment_has_a_job_file():
    shipped = {load_job(p).experiment for p in SHIPPED}
    assert set(EXPERIMENTS) >= ISSUE_5 and shipped >= ISSUE_5


def test_binary_5_detector_matches_sklearn_on_a_sample(store, client, data, tmp_path):
    n = 3000
    result, page = _run("binary_5_detector", {"sample": n, "forest_trees": 10}, store, client, tmp_path)
    metrics = result["metrics"]
    X, y = data["X"][:n], data["y"][:n] == 5
    expected = cross_val_score(SGDClassifier(random_state=42), X, y, cv=3, scoring="accuracy")
    assert metrics["cv_scores"] == pytest.approx(expected.tolist(), abs=1e-12)
    shuffled = StratifiedKFold(3, shuffle=True, random_state=42)
    expected = cross_val_score(SGDClassifier(random_state=42), X, y, cv=shuffled, scoring="accuracy")
    assert metrics["cv_scores_shuffled"] == pytest.approx(expected.tolist(), abs=1e-12)
    full = SGDClassifier(random_state=42).fit(X, y)
    assert metrics["sgd_some_digit_score"] == pytest.approx(full.decision_function(X[:1])[0], rel=1e-12)
    assert metrics["sgd_some_digit_prediction"] == full.predict(X[:1])[0]
    assert metrics["some_digit_above_threshold_0"] == (metrics["sgd_some_digit_score"] > 0)
    forest = RandomForestClassifier(n_estimators=10, random_state=42)
    proba = cross_val_predict(forest, X, y, cv=3, method="predict_proba")
    assert metrics["random_forest_proba_first2"] == proba[:2].tolist()
    assert metrics["random_forest_f1_proba_ge_half"] == f1_score(y, proba[:, 1] >= 0.5)
    assert metrics["random_forest_f1"] == f1_score(y, proba[:, 1] > 0.5)
    assert np.sum(metrics["confusion_matrix"]) == n
    assert np.array(metrics["confusion_matrix"])[1].sum() == y.sum()
    scores = cross_val_predict(SGDClassifier(random_state=42), X, y, cv=3, method="decision_function")
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(y, scores > 0), abs=1e-12)
    assert metrics["precision_at_90"] >= 0.9 and 0 < metrics["recall_at_90_precision"] <= 1
    assert metrics["never_5_cv_scores"] == [float(np.mean(~y[i : i + n // 3])) for i in range(0, n, n // 3)]
    assert 0.9 < metrics["random_forest"]["roc_auc"] <= 1 and metrics["random_forest_roc_auc"] > metrics["roc_auc"]
    sgd, forest = _display(result, "ROC curves")["curves"]
    assert 2 <= len(sgd["fpr"]) <= 500 and sgd["fpr"][0] == 0 and sgd["tpr"][-1] == 1
    assert (sgd["name"], sgd["auc"], forest["auc"]) == ("SGD", metrics["roc_auc"], metrics["random_forest_roc_auc"])
    both = page.tables["SGD beside the random forest"]
    assert both["header"] == ["metric", "SGD", "random forest"]
    assert page.column("SGD beside the random forest", "SGD")["precision"] == _metric(metrics["precision"])
    assert page.column("SGD beside the random forest", "random forest")["roc_auc"] == _metric(
        metrics["random_forest"]["roc_auc"]
    )
    assert page.tables["SGD at 90% precision"]["rows"][0][2] == _metric(metrics["precision_at_90"])
    assert page.facts("Metrics")["roc_auc"] == _metric(metrics["roc_auc"])
    assert {"Confusion matrix: SGD", "Confusion matrix: random forest", "Precision-recall curves"} <= set(page.images)
    assert _display(result, "Confusion matrix: SGD")["matrix"] == metrics["confusion_matrix"]


def test_zero_detector_matches_the_notebook_pipeline(store, client, data, tmp_path):
    result, page = _run("zero_detector", {"sample": 5000, "test_sample": 2000}, store, client, tmp_path)
    model = make_pipeline(
        VarianceThreshold(), StandardScaler(), SGDClassifier(loss="log_loss", max_iter=5, random_state=42)
    )
    model.fit(data["X"][:5000], data["y"][:5000] == 0)
    y_test = data["y_test"][:2000] == 0
    y_pred = model.predict(data["X_test"][:2000])
    assert result["metrics"]["test_accuracy"] == pytest.approx(accuracy_score(y_test, y_pred), abs=1e-12)
    assert result["metrics"]["f1"] == pytest.approx(f1_score(y_test, y_pred), abs=1e-12)
    coef = np.array(_display(result, "SGD coefficients")["maps"]["coefficient"])
    assert coef.shape == (28, 28) and coef[0, 0] == 0 and np.count_nonzero(coef) > 400
    wrong = np.flatnonzero(y_pred != y_test)
    misclassified = f"Misclassified test digits ({len(wrong):,} in all; the first {min(len(wrong), 40)})"
    assert _display(result, misclassified)["groups"][0]["indices"] == wrong[:40].tolist()
    red, blue = _colours(page.images["SGD coefficients"])
    assert red > 0.02 and blue > 0.02  # positive and negative weights in diverging colours
    assert max(_colours(page.images["Mean test image predicted 0"])) < 0.01  # a grey digit
    histogram = _display(result, "P(0) on the test set")
    assert (
        sum(histogram["counts"]["true 0"]) == y_test.sum()
        and sum(histogram["counts"]["other digits"]) == 2000 - y_test.sum()
    )
    assert page.facts("Metrics")["f1"] == _metric(result["metrics"]["f1"])


def test_multiclass_small_parts_match_sklearn(store, client, data, tmp_path):
    params = {
        "svc_sample": 300,
        "svc_full": False,
        "test_sample": 500,
        "sgd_sample": 450,
        "logistic_sample": 1000,
        "logistic_max_iter": 20,
    }
    result, page = _run("multiclass", params, store, client, tmp_path)
    metrics = result["metrics"]
    X, y = data["X"][:450], data["y"][:450]
    assert metrics["sgd_cv_scores"] == pytest.approx(
        cross_val_score(SGDClassifier(random_state=42), X, y, cv=3).tolist(), abs=1e-12
    )
    assert metrics["sgd_scaled_cv_scores"] == pytest.approx(
        cross_val_score(SGDClassifier(random_state=42), StandardScaler().fit_transform(X), y, cv=3).tolist(), abs=1e-12
    )
    sgd = SGDClassifier(random_state=42).fit(X, y)
    assert metrics["sgd_some_digit_prediction"] == sgd.predict(X[:1])[0]
    np.testing.assert_allclose(metrics["sgd_some_digit_scores"], sgd.decision_function(X[:1])[0], rtol=1e-12)
    svc = SVC(random_state=42).fit(data["X"][:300], data["y"][:300])
    np.testing.assert_allclose(metrics["svc_some_digit_scores"], svc.decision_function(X[:1])[0], rtol=1e-9)
    assert metrics["svc_some_digit_prediction"] == svc.predict(X[:1])[0] == metrics["svc_some_digit_class"]
    assert metrics["ovr_svc_binary_classifiers"] == 10 and "svc_full_some_digit_scores" not in metrics
    assert 0.5 < metrics["svc_test_accuracy"] <= 1 and 0.5 < metrics["ovr_svc_test_accuracy"] <= 1
    assert all(
        abs(p + n - 1) < 1e-12
        for p, n in zip(metrics["logistic_per_digit_mean_pos_proba"], metrics["logistic_per_digit_mean_neg_proba"])
    )
    assert np.sum(metrics["logistic_confusion_matrix"]) == 500
    per_digit = page.tables["Logistic regression (one-vs-rest) per digit"]
    assert per_digit["header"] == ["digit", "accuracy", "F1", "mean P(not digit)", "mean P(digit)"]
    columns = ("accuracy", "f1", "mean_neg_proba", "mean_pos_proba")
    assert per_digit["rows"][3] == ["3", *(_metric(metrics[f"logistic_per_digit_{c}"][3]) for c in columns)]
    maps = _display(result, "Logistic regression coefficients per digit")["maps"]
    assert list(maps) == [str(d) for d in range(10)] and np.array(maps["3"]).shape == (28, 28)
    assert _colours(page.images["Logistic regression coefficients per digit"])[0] > 0.02  # diverging colours
    histogram = _display(result, "Misclassified test digits by true digit")["counts"]["misclassified"]
    matrix = np.array(metrics["logistic_confusion_matrix"])
    assert histogram == (matrix.sum(axis=1) - np.diag(matrix)).tolist()
    assert page.tables["What each model says of some_digit (a 5)"]["rows"][0][1] == str(
        metrics["svc_some_digit_prediction"]
    )


def test_multiclass_and_error_analysis_share_the_scaled_sgd_through_the_store(store, client, data, tmp_path):
    n = 450
    first, _ = _run("error_analysis", {"sample": n}, store, client, tmp_path / "first")
    params = {
        "svc_sample": 300,
        "svc_full": False,
        "test_sample": 200,
        "sgd_sample": n,
        "logistic_sample": 600,
        "logistic_max_iter": 5,
    }
    second, _ = _run("multiclass", params, store, client, tmp_path / "second")
    assert second["metrics"]["sgd_scaled_cv_scores"] == first["metrics"]["cv_scores"]
    assert any(path.startswith("cache/sgd-scaled-cv3-") for path, _ in store.walk())


def test_small_sample_matches_sklearn(store, client, data, tmp_path):
    from skimage.transform import downscale_local_mean

    result, page = _run("small_sample", {"sample": 1200, "sweep": [1, 3, 5]}, store, client, tmp_path)
    metrics = result["metrics"]
    images = data["X"][:1200].astype(np.int64).reshape(-1, 28, 28)
    y = data["y"][:1200]
    for name, X in (
        ("small", images.reshape(1200, -1)),
        ("small_downscaled", downscale_local_mean(images, (1, 3, 3)).reshape(1200, -1)),
    ):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.33, random_state=42)
        assert metrics[f"gaussian_nb_{name}_accuracy"] == GaussianNB().fit(X_tr, y_tr).score(X_te, y_te)
        assert metrics[f"knn_{name}_accuracy"] == KNeighborsClassifier().fit(X_tr, y_tr).score(X_te, y_te)
    assert metrics["small_downscaled_accuracy_by_k"] == [
        KNeighborsClassifier(n_neighbors=k).fit(X_tr, y_tr).score(X_te, y_te) for k in (1, 3, 5)
    ]
    assert metrics["downscaled_features"] == 100 and metrics["original_features"] == 784
    assert {f"Confusion matrix: {m}, raw pixels" for m in ("knn", "gaussian_nb", "logistic")} <= set(page.images)


def test_svm_kernels_on_a_sample(store, client, data, tmp_path):
    result, page = _run(
        "svm_kernels", {"sample": 600, "test_sample": 300, "kernels": ["rbf", "sigmoid"]}, store, client, tmp_path
    )
    metrics = result["metrics"]
    assert set(metrics) >= {"rbf_test_accuracy", "sigmoid_test_accuracy", "poly_variance_threshold_test_accuracy"}
    assert metrics["rbf_test_accuracy"] > 0.8 and metrics["sigmoid_test_accuracy"] > 0.5
    assert len(metrics["rbf"]["support_vectors"]) == 10
    models = ["rbf", "sigmoid", "poly_variance_threshold"]
    assert all(np.sum(_display(result, f"Confusion matrix: {m}")["matrix"]) == 300 for m in models)
    by_model = page.column(f"Metrics by model: {', '.join(models)}", "test_accuracy")
    assert by_model == {m: _metric(metrics[f"{m}_test_accuracy"]) for m in models}


def test_error_analysis_confusion_and_grid(store, client, data, tmp_path):
    n = 2000
    result, page = _run("error_analysis", {"sample": n}, store, client, tmp_path)
    X, y = data["X"][:n], data["y"][:n]
    y_pred = cross_val_predict(SGDClassifier(random_state=42), StandardScaler().fit_transform(X), y, cv=3)
    matrix = np.array(result["metrics"]["confusion_matrix"])
    assert matrix.sum() == n and np.array_equal(matrix.sum(axis=1), np.bincount(y, minlength=10))
    assert np.trace(matrix) == np.sum(y == y_pred)
    declared = _display(result, "Errors, row-normalised")
    rows = confusion_values(np.array(declared["matrix"]), declared["normalize"], declared["errors_only"])
    assert np.all(np.diag(rows) == 0) and rows[3, 5] == pytest.approx(matrix[3, 5] / matrix[3].sum())
    declared = _display(result, "Errors, column-normalised")
    columns = confusion_values(np.array(declared["matrix"]), declared["normalize"], declared["errors_only"])
    assert columns[3, 5] == pytest.approx(matrix[3, 5] / matrix[:, 5].sum())
    quadrants = {
        g["label"]: g["indices"] for g in _display(result, "3s and 5s: true digit as predicted digit")["groups"]
    }
    assert list(quadrants) == ["3 as 3", "3 as 5", "5 as 3", "5 as 5"]
    assert quadrants["3 as 5"] == np.flatnonzero((y == 3) & (y_pred == 5))[:25].tolist()
    assert len(quadrants["5 as 5"]) == 25 and all(y[i] == 5 for i in quadrants["5 as 3"])
    ink = (np.asarray(page.images["3s and 5s: true digit as predicted digit"].convert("L")) < 128).mean()
    assert ink > 0.02  # training digits drawn from the store
    assert page.facts("Metrics")["cv_accuracy"] == _metric(result["metrics"]["cv_accuracy"])


def test_multilabel_f1_equals_sklearn_on_a_sample(store, client, data, tmp_path):
    n = 3000
    result, page = _run("multilabel", {"sample": n}, store, client, tmp_path)
    metrics = result["metrics"]
    Y = multilabel_targets(data["y"][:n])
    Y_pred = cross_val_predict(KNeighborsClassifier(), data["X"][:n], Y, cv=3)
    some_digit = KNeighborsClassifier().fit(data["X"][:n], Y).predict(data["X"][:1])[0]
    assert metrics["some_digit_prediction"] == some_digit.astype(bool).tolist()
    assert metrics["f1_macro"] == pytest.approx(f1_score(Y, Y_pred, average="macro"), abs=1e-12)
    assert metrics["f1_weighted"] == pytest.approx(f1_score(Y, Y_pred, average="weighted"), abs=1e-12)
    assert 0.9 < metrics["f1_macro"] < 1
    assert page.column("F1 per label", "F1") == {
        "digit >= 7": _metric(metrics["f1_large"]),
        "digit is odd": _metric(metrics["f1_odd"]),
    }
    wrong = np.flatnonzero(np.any(Y_pred != Y, axis=1))
    groups = _display(result, f"Training digits with a wrong label ({len(wrong):,} in all; the first 40)")["groups"]
    assert groups[0]["split"] == "train" and groups[0]["indices"] == wrong[:40].tolist()


def test_denoise_equals_sklearn_multioutput_knn(store, client, data, tmp_path):
    n, m = 3000, 200
    result, page = _run("denoise", {"sample": n, "test_sample": m, "examples": 4}, store, client, tmp_path)
    X, X_test = data["X"][:n].astype(np.int64), data["X_test"][:m].astype(np.int64)
    X_noisy, X_test_noisy = add_noise([X, X_test], 42)
    expected = KNeighborsClassifier().fit(X_noisy, X).predict(X_test_noisy)
    noisy, cleaned, original = _display(result, "Denoised test digits")["groups"]
    assert (noisy["label"], cleaned["label"], original["label"]) == ("noisy", "cleaned", "original")
    assert noisy["captions"] == ["#0", "#1", "#2", "#3"]
    assert np.array_equal(np.array(cleaned["images"]).reshape(4, 784), expected[:4])
    assert np.array_equal(np.array(noisy["images"]).reshape(4, 784), X_test_noisy[:4])
    assert np.array_equal(np.array(original["images"]).reshape(4, 784), X_test[:4])
    assert page.facts("Metrics")["psnr_db"] == _metric(result["metrics"]["psnr_db"])
    rmse = np.sqrt(np.mean((expected - X_test) ** 2.0))
    assert result["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert result["metrics"]["psnr_db"] == pytest.approx(20 * np.log10(255 / rmse), rel=1e-12)
    assert result["metrics"]["rmse"] < result["metrics"]["noisy_rmse"]


def test_a_report_that_cannot_be_written_does_not_lose_the_finished_run(store, client, tmp_path):
    run_dir = tmp_path / "run"
    lines: list[str] = []

    def log(line: str) -> None:
        """Once the run has made its pending outputs' folder, the report's temporary file there cannot be written."""
        lines.append(line)
        blocker = run_dir / PENDING_OUTPUTS / "report.html.part"
        if blocker.parent.is_dir() and not blocker.exists():
            blocker.mkdir()

    job = parse_job({"experiment": "denoise", "params": {"sample": 500, "test_sample": 20}}, str(tmp_path / "d.toml"))
    result = run_job(job, store, client, run_dir, log=log)
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == result["metrics"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert not (run_dir / "report.html").exists()
    assert any(line.startswith("warning: report.html not written (IsADirectoryError") for line in lines)


def _colours(image) -> tuple[float, float]:
    """Fractions of clearly red and clearly blue pixels of a figure."""
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    return float((rgb[..., 0] - rgb[..., 2] > 40).mean()), float((rgb[..., 2] - rgb[..., 0] > 40).mean())


def test_neighbour_mode_breaks_ties_towards_the_smallest_value():
    clean = np.array([[5, 1], [3, 1], [5, 2], [3, 2], [9, 2]], dtype=np.uint8)
    assert neighbour_mode(clean, np.array([[0, 1, 2, 3, 4]])).tolist() == [[3, 2]]
    assert neighbour_mode(clean, np.array([[4, 0, 2]])).tolist() == [[5, 2]]
