"""Issue 5's experiment jobs, run for real on real MNIST with small samples on a two-worker cluster.

Each test runs a job through :func:`mnist_dask.jobs.driver.run_job` (with conftest's module ``client``
and ``store`` fixtures) and checks its figures against scikit-learn computed directly in the
test on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import cross_val_predict, cross_val_score, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mnist_dask.data.store import Store
from mnist_dask.experiments import EXPERIMENTS
from mnist_dask.experiments.knn_outputs import add_noise, multilabel_targets, neighbour_mode
from mnist_dask.jobs.driver import run_job
from mnist_dask.jobs.spec import load_job, parse_job

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


def _run(experiment: str, params: dict, store: Store, client: Client, tmp_path: Path) -> dict:
    """Run an experiment job built from ``params`` and check result.json holds the returned result."""
    job = parse_job({"experiment": experiment, "params": params}, str(tmp_path / f"{experiment}.toml"))
    result = run_job(job, store, client, tmp_path / "run", log=lambda line: None)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["metrics"] == json.loads(
        json.dumps(result["metrics"])
    )
    return result


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
    result = _run("binary_5_detector", {"sample": n, "forest_trees": 10}, store, client, tmp_path)
    metrics = result["metrics"]
    X, y = data["X"][:n], data["y"][:n] == 5
    expected = cross_val_score(SGDClassifier(random_state=42), X, y, cv=3, scoring="accuracy")
    assert metrics["cv_scores"] == pytest.approx(expected.tolist(), abs=1e-12)
    assert np.sum(metrics["confusion_matrix"]) == n
    assert np.array(metrics["confusion_matrix"])[1].sum() == y.sum()
    scores = cross_val_predict(SGDClassifier(random_state=42), X, y, cv=3, method="decision_function")
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(y, scores > 0), abs=1e-12)
    assert metrics["precision_at_90"] >= 0.9 and 0 < metrics["recall_at_90_precision"] <= 1
    assert metrics["never_5_cv_scores"] == [float(np.mean(~y[i : i + n // 3])) for i in range(0, n, n // 3)]
    assert 0.9 < metrics["random_forest"]["roc_auc"] <= 1 and metrics["random_forest_roc_auc"] > metrics["roc_auc"]
    roc = result["curves"]["sgd"]["roc"]
    assert 2 <= len(roc["fpr"]) <= 500 and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1


def test_zero_detector_matches_the_notebook_pipeline(store, client, data, tmp_path):
    result = _run("zero_detector", {"sample": 5000, "test_sample": 2000}, store, client, tmp_path)
    model = make_pipeline(
        VarianceThreshold(), StandardScaler(), SGDClassifier(loss="log_loss", max_iter=5, random_state=42)
    )
    model.fit(data["X"][:5000], data["y"][:5000] == 0)
    y_test = data["y_test"][:2000] == 0
    y_pred = model.predict(data["X_test"][:2000])
    assert result["metrics"]["test_accuracy"] == pytest.approx(accuracy_score(y_test, y_pred), abs=1e-12)
    assert result["metrics"]["f1"] == pytest.approx(f1_score(y_test, y_pred), abs=1e-12)
    coef = np.array(result["figures_data"]["coefficient_image"])
    assert coef.shape == (28, 28) and coef[0, 0] == 0 and np.count_nonzero(coef) > 400
    assert len(result["figures_data"]["misclassified_test_indices"]) == np.sum(y_pred != y_test)


def test_multiclass_small_parts_match_sklearn(store, client, data, tmp_path):
    params = {
        "svc_sample": 300,
        "test_sample": 500,
        "sgd_sample": 450,
        "logistic_sample": 1000,
        "logistic_max_iter": 20,
        "small_sample": 1200,
    }
    metrics = _run("multiclass", params, store, client, tmp_path)["metrics"]
    X, y = data["X"][:450], data["y"][:450]
    assert metrics["sgd_cv_scores"] == pytest.approx(
        cross_val_score(SGDClassifier(random_state=42), X, y, cv=3).tolist(), abs=1e-12
    )
    assert metrics["sgd_scaled_cv_scores"] == pytest.approx(
        cross_val_score(SGDClassifier(random_state=42), StandardScaler().fit_transform(X), y, cv=3).tolist(), abs=1e-12
    )
    X_small = data["X"][:1200].astype(np.uint8)
    X_tr, X_te, y_tr, y_te = train_test_split(X_small, data["y"][:1200], test_size=0.33, random_state=42)
    assert metrics["gaussian_nb_small_accuracy"] == pytest.approx(GaussianNB().fit(X_tr, y_tr).score(X_te, y_te))
    assert metrics["knn_small_accuracy"] == pytest.approx(KNeighborsClassifier().fit(X_tr, y_tr).score(X_te, y_te))
    assert 0.5 < metrics["svc_test_accuracy"] <= 1 and 0.5 < metrics["ovr_svc_test_accuracy"] <= 1
    assert metrics["svc"]["binary_classifiers"] == 45 and metrics["ovr_svc"]["binary_classifiers"] == 10
    table = metrics["logistic_ovr"]["per_digit"]
    assert [row["digit"] for row in table] == list(range(10))
    assert all(abs(row["mean_pos_proba"] + row["mean_neg_proba"] - 1) < 1e-12 for row in table)
    assert np.sum(metrics["logistic_ovr"]["confusion_matrix"]) == 500


def test_svm_kernels_on_a_sample(store, client, data, tmp_path):
    result = _run(
        "svm_kernels", {"sample": 600, "test_sample": 300, "kernels": ["rbf", "sigmoid"]}, store, client, tmp_path
    )
    metrics = result["metrics"]
    assert set(metrics) >= {"rbf_test_accuracy", "sigmoid_test_accuracy", "poly_variance_threshold_test_accuracy"}
    assert metrics["rbf_test_accuracy"] > 0.8 and metrics["sigmoid_test_accuracy"] > 0.5
    assert len(metrics["rbf"]["support_vectors"]) == 10
    assert all(np.sum(m) == 300 for m in result["figures_data"]["confusion_matrices"].values())


def test_error_analysis_confusion_and_grid(store, client, data, tmp_path):
    n = 2000
    result = _run("error_analysis", {"sample": n}, store, client, tmp_path)
    X, y = data["X"][:n], data["y"][:n]
    y_pred = cross_val_predict(SGDClassifier(random_state=42), StandardScaler().fit_transform(X), y, cv=3)
    matrix = np.array(result["metrics"]["confusion_matrix"])
    assert matrix.sum() == n and np.array_equal(matrix.sum(axis=1), np.bincount(y, minlength=10))
    assert np.trace(matrix) == np.sum(y == y_pred)
    rows = np.array(result["figures_data"]["confusion_matrix_row_normalised_errors"])
    assert np.all(np.diag(rows) == 0) and rows[3, 5] == pytest.approx(matrix[3, 5] / matrix[3].sum())
    quadrants = result["figures_data"]["three_five_grid"]["quadrants"]
    assert quadrants["3_as_5"] == np.flatnonzero((y == 3) & (y_pred == 5))[:25].tolist()
    assert len(quadrants["5_as_5"]) == 25 and all(y[i] == 5 for i in quadrants["5_as_3"])


def test_multilabel_f1_equals_sklearn_on_a_sample(store, client, data, tmp_path):
    n = 3000
    result = _run("multilabel", {"sample": n}, store, client, tmp_path)
    metrics = result["metrics"]
    Y = multilabel_targets(data["y"][:n])
    Y_pred = cross_val_predict(KNeighborsClassifier(), data["X"][:n], Y, cv=3)
    wrong = np.flatnonzero(np.any(Y_pred != Y, axis=1))[:200].tolist()
    assert result["figures_data"]["misclassified_indices"] == wrong  # the same predictions, row by row
    assert metrics["f1_macro"] == pytest.approx(f1_score(Y, Y_pred, average="macro"), abs=1e-12)
    assert metrics["f1_weighted"] == pytest.approx(f1_score(Y, Y_pred, average="weighted"), abs=1e-12)
    assert 0.9 < metrics["f1_macro"] < 1


def test_denoise_equals_sklearn_multioutput_knn(store, client, data, tmp_path):
    n, m = 3000, 200
    result = _run("denoise", {"sample": n, "test_sample": m, "examples": 4}, store, client, tmp_path)
    X, X_test = data["X"][:n].astype(np.int64), data["X_test"][:m].astype(np.int64)
    X_noisy, X_test_noisy = add_noise([X, X_test], 42)
    expected = KNeighborsClassifier().fit(X_noisy, X).predict(X_test_noisy)
    examples = result["figures_data"]["examples"]
    assert examples["test_indices"] == [0, 1, 2, 3]
    assert np.array_equal(np.array(examples["cleaned"]).reshape(4, 784), expected[:4])
    assert np.array_equal(np.array(examples["noisy"]).reshape(4, 784), X_test_noisy[:4])
    rmse = np.sqrt(np.mean((expected - X_test) ** 2.0))
    assert result["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert result["metrics"]["psnr_db"] == pytest.approx(20 * np.log10(255 / rmse), rel=1e-12)
    assert result["metrics"]["rmse"] < result["metrics"]["noisy_rmse"]


def test_neighbour_mode_breaks_ties_towards_the_smallest_value():
    clean = np.array([[5, 1], [3, 1], [5, 2], [3, 2], [9, 2]], dtype=np.uint8)
    assert neighbour_mode(clean, np.array([[0, 1, 2, 3, 4]])).tolist() == [[3, 2]]
    assert neighbour_mode(clean, np.array([[4, 0, 2]])).tolist() == [[5, 2]]
