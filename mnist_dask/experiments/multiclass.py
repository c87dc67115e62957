"""Multiclass classifiers: SVC OvO/OvR, SGD with and without scaling, one-vs-rest logistic regression,
the notebook 004 small-sample comparison, notebook 003's SVC kernels, and chapter 3's error analysis.

One-vs-rest fits (``OneVsRestClassifier(n_jobs=-1)``) and cross-validation folds
(``cross_val_predict(n_jobs=-1)``) run under the Dask joblib backend, so each binary fit or
fold is its own cluster task; independent models are submitted as separate tasks, and
expensive predictions are split into test chunks predicted on the workers.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from distributed import Client
from sklearn.base import clone
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mnist_dask.experiments import Context, Result, experiment
from mnist_dask.experiments.common import fold_accuracies, load_split, on_cluster, run_tasks
from mnist_dask.experiments.params import Count, Float, Positive, Seed, default_list, parameters
from mnist_dask.report import spec

CV = 3
DIGITS = np.arange(10)
PREDICT_CHUNK = 1_000
MISCLASSIFIED_SHOWN = 40


@parameters
class MulticlassParams:
    """Rows for each model (first rows of the training set; 0: all), the seed, saga's iterations."""

    svc_sample: Positive = 2000
    test_sample: Count = 0
    sgd_sample: Count = 0
    random_state: Seed = 42
    logistic_sample: Count = 0
    logistic_max_iter: Positive = 100
    small_sample: Positive = 6000


@experiment("multiclass", MulticlassParams)
def multiclass(ctx: Context, p: MulticlassParams) -> Result:
    """SVC OvO vs OvR on the first images, SGD 3-fold CV raw and scaled, OvR saga logistic, the 6,000-image trio."""
    X, y = load_split(ctx.store, "train")
    X_test, y_test = load_split(ctx.store, "test", p.test_sample)
    seed = p.random_state
    svc = _svc_ovo_ovr(ctx, X[: p.svc_sample], y[: p.svc_sample], X_test, y_test, seed)
    sgd_rows, logistic_rows = p.sgd_sample or len(y), p.logistic_sample or len(y)
    sgd = _sgd_cv(ctx, X[:sgd_rows], y[:sgd_rows], seed)
    logistic = _logistic_ovr(ctx, X[:logistic_rows], y[:logistic_rows], X_test, y_test, seed, p.logistic_max_iter)
    small = _small_sample(ctx, p.small_sample)
    metrics = {
        "svc": svc["metrics"],
        "ovr_svc": svc["ovr_metrics"],
        "sgd": sgd["metrics"],
        "logistic_ovr": logistic["metrics"],
        "small_sample": small["metrics"],
        "svc_test_accuracy": svc["metrics"]["test_accuracy"],
        "ovr_svc_test_accuracy": svc["ovr_metrics"]["test_accuracy"],
        "sgd_cv_scores": sgd["metrics"]["cv_scores"],
        "sgd_scaled_cv_scores": sgd["metrics"]["scaled_cv_scores"],
        "logistic_test_accuracy": logistic["metrics"]["test_accuracy"],
        "logistic_f1_weighted": logistic["metrics"]["f1_weighted"],
        **{f"{name}_small_accuracy": value for name, value in small["metrics"].items()},
    }
    notes = sgd["notes"] + logistic["notes"]
    return {
        "model": {
            "svc": svc["model"],
            "sgd": sgd["model"],
            "logistic_ovr": logistic["model"],
            "small_sample": small["model"],
            "test_rows": len(y_test),
        },
        "metrics": metrics,
        "report": logistic["report"] + small["report"],
        "notes": notes,
    }


@parameters
class SvmKernelsParams:
    """Row samples (0: all), kernels, poly degree, the extra poly run's VarianceThreshold (0: none), cache MB."""

    sample: Count = 0
    test_sample: Count = 0
    kernels: list[Literal["linear", "poly", "rbf", "sigmoid"]] = default_list("poly", "rbf", "sigmoid")
    degree: Positive = 3
    poly_variance_threshold: Float = 100.0
    cache_size: Positive = 1000


@experiment("svm_kernels", SvmKernelsParams)
def svm_kernels(ctx: Context, p: SvmKernelsParams) -> Result:
    """Notebook 003: StandardScaler + OneVsRest(SVC) with each kernel, plus poly after VarianceThreshold(100)."""
    X, y = load_split(ctx.store, "train", p.sample)
    X_test, y_test = load_split(ctx.store, "test", p.test_sample)
    variants: dict[str, tuple[str, float | None]] = {kernel: (kernel, None) for kernel in p.kernels}
    if p.poly_variance_threshold > 0:
        variants["poly_variance_threshold"] = ("poly", p.poly_variance_threshold)
    metrics: dict[str, Any] = {}
    models: dict[str, str] = {}
    displays: list[spec.Display] = []
    for name, (kernel, threshold) in variants.items():
        model = _svc_pipeline(kernel, p.degree, p.cache_size, threshold)
        ctx.log(f"svm_kernels: {name}: 10 one-vs-rest SVC fits as cluster tasks on {len(y):,} images")
        with on_cluster(ctx.client):
            model.fit(X, y)
        y_pred = _predict_on_cluster(ctx.client, model, X_test)
        metrics[f"{name}_test_accuracy"] = float(accuracy_score(y_test, y_pred))
        metrics[name] = {
            "test_accuracy": metrics[f"{name}_test_accuracy"],
            "f1_macro": float(f1_score(y_test, y_pred, average="macro")),
            "support_vectors": [int(e.n_support_.sum()) for e in model[-1].estimators_],
        }
        models[name] = repr(model)
        displays.append(
            spec.confusion_matrix(f"Confusion matrix: {name}", confusion_matrix(y_test, y_pred, labels=DIGITS))
        )
        ctx.log(f"svm_kernels: {name}: test accuracy {metrics[f'{name}_test_accuracy']:.4f}")
    notes = (
        []
        if not p.sample
        else [f"trained on the first {p.sample:,} training images only (the published figures use all 60,000)"]
    )
    return {
        "model": {"pipelines": models, "train_rows": len(y), "test_rows": len(y_test)},
        "metrics": metrics,
        "report": displays,
        "notes": notes + ["support_vectors lists the support-vector count of each of the 10 binary SVCs"],
    }


@parameters
class ErrorAnalysisParams:
    """First ``sample`` training rows (0: all), the SGD seed, images per quadrant of the 3-vs-5 grid."""

    sample: Count = 0
    random_state: Seed = 42
    pairs: Positive = 25


@experiment("error_analysis", ErrorAnalysisParams)
def error_analysis(ctx: Context, p: ErrorAnalysisParams) -> Result:
    """Confusion matrix of the scaled SGD's 3-fold predictions, normalised by row and by column, and the 3/5 grid."""
    X, y = load_split(ctx.store, "train", p.sample)
    X_scaled = StandardScaler().fit_transform(X)
    ctx.log("error_analysis: scaled SGD, 3 folds as cluster tasks")
    with on_cluster(ctx.client):
        y_pred = cross_val_predict(SGDClassifier(random_state=p.random_state), X_scaled, y, cv=CV, n_jobs=-1)
    matrix = confusion_matrix(y, y_pred, labels=DIGITS)
    folds = [test for _, test in StratifiedKFold(CV).split(X, y)]
    quadrants = [
        spec.stored_digits("train", np.flatnonzero((y == a) & (y_pred == b))[: p.pairs], label=f"{a} as {b}")
        for a in (3, 5)
        for b in (3, 5)
    ]
    errors_only = "the diagonal is set to 0 to show only the errors"
    return {
        "model": {
            "estimator": f"SGDClassifier(random_state={p.random_state})",
            "preprocessing": "StandardScaler fitted on the whole training set (as the notebook does)",
            "cv": CV,
            "train_rows": len(y),
        },
        "metrics": {
            "confusion_matrix": matrix.tolist(),
            "cv_scores": fold_accuracies(y, y_pred, folds),
            "cv_accuracy": float(np.mean(y == y_pred)),
            "errors_by_true_digit": (matrix.sum(axis=1) - np.diag(matrix)).tolist(),
            "errors_by_predicted_digit": (matrix.sum(axis=0) - np.diag(matrix)).tolist(),
        },
        "report": [
            spec.confusion_matrix("Confusion matrix", matrix, caption="rows true digits, columns predicted digits"),
            spec.confusion_matrix(
                "Errors, row-normalised",
                matrix,
                normalize="true",
                errors_only=True,
                caption=f"each row divided by its number of images; {errors_only}",
            ),
            spec.confusion_matrix(
                "Errors, column-normalised",
                matrix,
                normalize="pred",
                errors_only=True,
                caption=f"each column divided by its number of predictions; {errors_only}",
            ),
            spec.digits(
                "3s and 5s: true digit as predicted digit",
                quadrants,
                per_line=13,
                caption=f"training images, the first {p.pairs} of each (true, predicted) pair",
            ),
        ],
    }


def _svc_ovo_ovr(
    ctx: Context, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, seed: int
) -> dict[str, Any]:
    """SVC (45 one-vs-one machines) as one task, then OneVsRest(SVC) as ten tasks, on the first images."""
    ctx.log(f"multiclass: SVC one-vs-one and one-vs-rest on the first {len(y):,} images")
    [ovo] = run_tasks(ctx.client, _fit, [(SVC(random_state=seed), X, y)])
    ovr = OneVsRestClassifier(SVC(random_state=seed), n_jobs=-1)
    with on_cluster(ctx.client):
        ovr.fit(X, y)
    results: dict[str, dict[str, Any]] = {}
    for name, model in (("metrics", ovo), ("ovr_metrics", ovr)):
        y_pred = _predict_on_cluster(ctx.client, model, X_test)
        results[name] = {
            "test_accuracy": float(accuracy_score(y_test, y_pred)),
            "train_rows": len(y),
            "f1_macro": float(f1_score(y_test, y_pred, average="macro")),
        }
    results["metrics"]["binary_classifiers"] = len(DIGITS) * (len(DIGITS) - 1) // 2
    results["ovr_metrics"]["binary_classifiers"] = len(ovr.estimators_)
    results["model"] = {"ovo": repr(ovo), "ovr": repr(ovr), "train_rows": len(y)}
    return results


def _sgd_cv(ctx: Context, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """SGD multiclass 3-fold CV accuracies on raw pixels and after StandardScaler (fitted on all rows, as in 001)."""
    folds = [test for _, test in StratifiedKFold(CV).split(X, y)]
    scores = {}
    for name, data in (("cv_scores", X), ("scaled_cv_scores", StandardScaler().fit_transform(X))):
        ctx.log(f"multiclass: SGD {name}, 3 folds as cluster tasks")
        with on_cluster(ctx.client):
            y_pred = cross_val_predict(SGDClassifier(random_state=seed), data, y, cv=CV, n_jobs=-1)
        scores[name] = fold_accuracies(y, y_pred, folds)
    return {
        "metrics": scores,
        "model": {"estimator": f"SGDClassifier(random_state={seed})", "cv": CV, "train_rows": len(y)},
        "notes": ["SGD cv scores are the per-fold accuracies of cross_val_predict (equal to cross_val_score)"],
    }


def _logistic_ovr(
    ctx: Context, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, seed: int, max_iter: int
) -> dict[str, Any]:
    """Notebook 003's VarianceThreshold + StandardScaler + OneVsRest(saga LogisticRegression) with its digit table."""
    model = Pipeline(
        [
            ("feature_selection", VarianceThreshold()),
            ("feature_scaling", StandardScaler()),
            (
                "classification",
                OneVsRestClassifier(LogisticRegression(solver="saga", random_state=seed, max_iter=max_iter), n_jobs=-1),
            ),
        ]
    )
    ctx.log(f"multiclass: one-vs-rest saga logistic regression on {len(y):,} images, 10 fits as cluster tasks")
    with on_cluster(ctx.client):
        model.fit(X, y)
    proba = model.predict_proba(X_test)
    y_pred = model.classes_[np.argmax(proba, axis=1)]
    table = _digit_table(y_test, y_pred, proba)
    coef = [
        model["feature_selection"].inverse_transform(model["feature_scaling"].inverse_transform(e.coef_))[0]
        for e in model["classification"].estimators_
    ]
    matrix = confusion_matrix(y_test, y_pred, labels=DIGITS)
    wrong = np.flatnonzero(y_pred != y_test)
    shown = wrong[:MISCLASSIFIED_SHOWN]
    displays = [
        spec.records(
            "Logistic regression (one-vs-rest) per digit",
            table,
            {
                "digit": "digit",
                "accuracy": "accuracy",
                "f1": "F1",
                "mean_neg_proba": "mean P(not digit)",
                "mean_pos_proba": "mean P(digit)",
            },
            caption="on the test images of each digit: accuracy (recall), F1, the mean probability given to the digit",
        ),
        spec.confusion_matrix("Confusion matrix: logistic regression (one-vs-rest)", matrix),
        spec.pixel_maps(
            "Logistic regression coefficients per digit",
            {str(d): c for d, c in zip(DIGITS, coef)},
            diverging=True,
            caption="each one-vs-rest model's coefficients through StandardScaler.inverse_transform, "
            "then VarianceThreshold's (removed pixels 0)",
        ),
        spec.histogram(
            "Misclassified test digits by true digit",
            np.arange(11) - 0.5,
            {"misclassified": np.bincount(y_test[wrong], minlength=10)},
            xlabel="true digit",
        ),
    ]
    if len(wrong):
        displays.append(
            spec.digits(
                f"Misclassified test digits ({len(wrong):,} in all; the first {len(shown)})",
                [spec.stored_digits("test", shown, captions=[f"#{i} {y_test[i]}→{y_pred[i]}" for i in shown])],
                caption="titles: test index, true → predicted (logistic regression)",
            )
        )
    return {
        "metrics": {
            "test_accuracy": float(accuracy_score(y_test, y_pred)),
            "f1_weighted": float(f1_score(y_test, y_pred, average="weighted")),
            "f1_macro": float(f1_score(y_test, y_pred, average="macro")),
            "per_digit": table,
            "confusion_matrix": matrix.tolist(),
        },
        "model": {"pipeline": repr(model), "train_rows": len(y)},
        "report": displays,
        "notes": [
            f"notebook 003 used LogisticRegression(multi_class='ovr') (parameter removed in scikit-learn "
            f"1.8; inside OneVsRestClassifier each fit is binary, so it had no effect); max_iter={max_iter}"
        ],
    }


def _small_sample(ctx: Context, sample: int) -> dict[str, Any]:
    """Notebook 004: first ``sample`` images split 67/33 (random_state=42); GaussianNB, liblinear logistic, 5-NN."""
    X, y = load_split(ctx.store, "train", sample, dtype=np.uint8)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.33, random_state=42)
    models = {
        "knn": KNeighborsClassifier(),
        "gaussian_nb": GaussianNB(),
        "logistic": OneVsRestClassifier(LogisticRegression(solver="liblinear", max_iter=1000)),
    }
    ctx.log(f"multiclass: GaussianNB, logistic, k-NN on {sample:,} images as 3 cluster tasks")
    results = run_tasks(ctx.client, _fit_predict, [(model, X_train, y_train, X_test) for model in models.values()])
    predictions = dict(zip(models, results))
    return {
        "metrics": {name: float(accuracy_score(y_test, p)) for name, p in predictions.items()},
        "model": {
            "sample": int(sample),
            "split": "train_test_split(test_size=0.33, random_state=42)",
            "train_rows": len(y_train),
            "test_rows": len(y_test),
            **{name: repr(model) for name, model in models.items()},
        },
        "report": [
            spec.confusion_matrix(
                f"Confusion matrix: {name} on {sample:,} images",
                confusion_matrix(y_test, p, labels=DIGITS),
                caption="notebook 004's 67/33 split of the first training images",
            )
            for name, p in predictions.items()
        ],
    }


def _digit_table(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray) -> list[dict[str, float]]:
    """Notebook 003's per-digit table: accuracy on that digit's images, F1, mean negative/positive probability."""
    recall = recall_score(y_true, y_pred, labels=DIGITS, average=None, zero_division=0)
    f1 = f1_score(y_true, y_pred, labels=DIGITS, average=None, zero_division=0)
    rows = []
    for d in DIGITS:
        pos = float(np.mean(proba[y_true == d, d])) if np.any(y_true == d) else float("nan")
        rows.append(
            {
                "digit": int(d),
                "accuracy": float(recall[d]),
                "f1": float(f1[d]),
                "mean_neg_proba": 1.0 - pos,
                "mean_pos_proba": pos,
            }
        )
    return rows


def _svc_pipeline(kernel: str, degree: int, cache_size: int, threshold: float | None) -> Pipeline:
    """Optional VarianceThreshold, StandardScaler, then OneVsRest(SVC(kernel)) fanned out with n_jobs=-1."""
    steps = [("feature_selection", VarianceThreshold(threshold))] if threshold else []
    svc = SVC(kernel=kernel, degree=degree, cache_size=cache_size)
    return Pipeline(
        steps + [("feature_scaling", StandardScaler()), ("classification", OneVsRestClassifier(svc, n_jobs=-1))]
    )


def _predict_on_cluster(client: Client, model: Any, X: np.ndarray) -> np.ndarray:
    """Predict X in chunks of rows, one cluster task per chunk, with the model scattered once."""
    remote = client.scatter(model, broadcast=True)
    futures = [
        client.submit(_predict, remote, X[i : i + PREDICT_CHUNK], pure=False) for i in range(0, len(X), PREDICT_CHUNK)
    ]
    return np.concatenate(client.gather(futures))


def _fit(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """Fit a fresh clone of ``model`` (runs on a worker)."""
    return clone(model).fit(X, y)


def _fit_predict(model: Any, X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Fit a fresh clone on (X, y) and predict X_test (runs on a worker)."""
    return clone(model).fit(X, y).predict(X_test)


def _predict(model: Any, X: np.ndarray) -> np.ndarray:
    """Predict one chunk (runs on a worker)."""
    return model.predict(X)
