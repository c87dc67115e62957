"""Multiclass classifiers of Hands-On ML chapter 3 (notebooks 001, 002) and notebook 003's logistic regression.

SVC one-vs-one and one-vs-rest on the first 2,000 training images (002) and on all 60,000 (001),
each asked about ``some_digit`` (the first training image, a 5); SGD fitted on all images (its
``some_digit`` scores) and cross-validated on raw and scaled pixels; notebook 003's
VarianceThreshold + StandardScaler + one-vs-rest saga logistic regression with its per-digit table.

Every fit is a cluster task (one-vs-rest and SGD one per class), all submitted together
(:mod:`mnist_dask.experiments.tasks`). The scaled SGD's cross-validated decisions are shared
with ``error_analysis`` through the store (:mod:`mnist_dask.experiments.cache`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import Client
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mnist_dask.experiments import Context, Result, experiment, tasks
from mnist_dask.experiments.cache import Cached
from mnist_dask.experiments.common import first_rows_check, fold_accuracies, load_split, misclassified_digits
from mnist_dask.experiments.params import Bool, Count, Positive, Seed, parameters
from mnist_dask.report import spec

CV = 3
DIGITS = np.arange(10)
SCALED_SGD = "sgd-scaled-cv3"  # the cache name of the scaled SGD's cross-validated decisions


@parameters
class MulticlassParams:
    """Rows per model (first training rows; 0: all), whether to fit 001's SVCs on all rows, seed, saga's iterations,
    libsvm's kernel cache in MB (speed only)."""

    svc_sample: Positive = 2000
    svc_full: Bool = True
    test_sample: Count = 0
    sgd_sample: Count = 0
    random_state: Seed = 42
    logistic_sample: Count = 0
    logistic_max_iter: Positive = 100
    cache_size: Positive = 1000


@experiment(
    "multiclass",
    MulticlassParams,
    check=first_rows_check(train=("svc_sample", "sgd_sample", "logistic_sample"), test=("test_sample",)),
)
def multiclass(ctx: Context, p: MulticlassParams) -> Result:
    """SVC OvO/OvR on 2,000 and 60,000 images, SGD (some_digit, 3-fold CV raw and scaled), OvR saga logistic."""
    X, y = load_split(ctx.store, "train")
    X_test, y_test = load_split(ctx.store, "test", p.test_sample)
    client, seed = ctx.client, p.random_state
    sgd_rows = p.sgd_sample or len(y)
    X_sgd, y_sgd = X[:sgd_rows], y[:sgd_rows]
    X_scaled = StandardScaler().fit_transform(X_sgd)  # fitted on all rows, test folds included, as notebook 001
    folds = list(StratifiedKFold(CV).split(X_sgd, y_sgd))
    sgd = SGDClassifier(random_state=seed)
    scaled = scaled_sgd_cache(ctx, sgd, sgd_rows)
    cached = scaled.load(ctx, ("decisions",))

    X_remote, X_sgd_remote = tasks.scatter(client, X), tasks.scatter(client, X_sgd)
    small = p.svc_sample
    svc_small, ovr_small = (
        SVC(random_state=seed, cache_size=p.cache_size),
        SVC(random_state=seed, cache_size=p.cache_size),
    )
    pending: dict[str, tasks.Pending] = {
        "svc": tasks.fit(client, svc_small, X_remote, y, np.arange(small)),
        "ovr_svc": tasks.one_vs_rest(client, ovr_small, tasks.scatter(client, X[:small]), y[:small]),
        "sgd_full": tasks.sgd_cross_val_decisions(
            client, sgd, X_sgd_remote, X_sgd, y_sgd, [(np.arange(sgd_rows), np.array([0]))]
        ),
        "sgd_cv": tasks.sgd_cross_val_decisions(client, sgd, X_sgd_remote, X_sgd, y_sgd, folds),
    }
    if cached is None:
        pending["sgd_scaled_cv"] = tasks.sgd_cross_val_decisions(
            client, sgd, tasks.scatter(client, X_scaled), X_scaled, y_sgd, folds
        )
    if p.svc_full:  # notebook 001 fits both on all 60,000 images: the longest fits of the study
        pending["svc_full"] = tasks.fit(client, SVC(cache_size=p.cache_size), X_remote, y)
        pending["ovr_svc_full"] = tasks.one_vs_rest(client, SVC(cache_size=p.cache_size), X_remote, y)
    logistic_rows = p.logistic_sample or len(y)
    logistic_model, logistic_pending = _logistic_ovr(
        client, X[:logistic_rows], y[:logistic_rows], seed, p.logistic_max_iter
    )
    pending["logistic"] = logistic_pending
    ctx.log(f"multiclass: {_count(pending)} fits as cluster tasks (SVC, one-vs-rest SVC, SGD per class, logistic)")
    done = dict(zip(pending, tasks.gather(client, *pending.values())))
    scaled_decisions = cached["decisions"] if cached is not None else done["sgd_scaled_cv"]
    if cached is None:
        scaled.save(ctx, {"decisions": scaled_decisions})
    logistic_model.steps[-1] = ("classification", done["logistic"])

    some_digit = X[:1]
    svc_scores = done["svc"].decision_function(some_digit)[0]
    metrics: dict[str, Any] = {
        "svc_some_digit_prediction": int(done["svc"].predict(some_digit)[0]),
        "svc_some_digit_scores": svc_scores.tolist(),
        "svc_some_digit_argmax": int(np.argmax(svc_scores)),
        "svc_some_digit_class": int(done["svc"].classes_[np.argmax(svc_scores)]),
        "ovr_svc_some_digit_prediction": int(done["ovr_svc"].predict(some_digit)[0]),
        "ovr_svc_binary_classifiers": len(done["ovr_svc"].estimators_),
        "svc_test_accuracy": _accuracy(client, done["svc"], X_test, y_test),
        "ovr_svc_test_accuracy": _accuracy(client, done["ovr_svc"], X_test, y_test),
    }
    if p.svc_full:
        full_scores = done["svc_full"].decision_function(some_digit)[0]
        metrics.update(
            {
                "svc_full_some_digit_prediction": int(done["svc_full"].predict(some_digit)[0]),
                "svc_full_some_digit_scores": full_scores.tolist(),
                "svc_full_some_digit_argmax": int(np.argmax(full_scores)),
                "ovr_svc_full_some_digit_prediction": int(done["ovr_svc_full"].predict(some_digit)[0]),
                "ovr_svc_full_binary_classifiers": len(done["ovr_svc_full"].estimators_),
            }
        )
    sgd_scores = done["sgd_full"][0]
    test_folds = [test for _, test in folds]
    classes = np.unique(y_sgd)
    metrics.update(
        {
            "sgd_some_digit_prediction": int(classes[np.argmax(sgd_scores)]),
            "sgd_some_digit_scores": sgd_scores.tolist(),
            "sgd_cv_scores": fold_accuracies(y_sgd, tasks.decisions_to_labels(done["sgd_cv"], classes), test_folds),
            "sgd_scaled_cv_scores": fold_accuracies(
                y_sgd, tasks.decisions_to_labels(scaled_decisions, classes), test_folds
            ),
        }
    )
    logistic = _logistic_results(logistic_model, X_test, y_test)
    metrics.update(logistic["metrics"])
    ctx.log(
        f"multiclass: SGD cv {metrics['sgd_cv_scores']}; logistic test accuracy {metrics['logistic_test_accuracy']}"
    )
    return {
        "model": {
            "svc": repr(svc_small),
            "svc_rows": small,
            "svc_full": "SVC() and OneVsRestClassifier(SVC()) on all training rows" if p.svc_full else None,
            "sgd": repr(sgd),
            "sgd_rows": sgd_rows,
            "logistic": repr(logistic_model),
            "logistic_rows": logistic_rows,
            "test_rows": len(y_test),
            "some_digit": "the first training image (a 5)",
        },
        "metrics": metrics,
        "report": _displays(metrics) + logistic["report"],
        "notes": [
            "SGD cv scores are the per-fold accuracies of cross_val_predict (equal to cross_val_score for a seeded "
            "model); each (fold, class) SGD is its own cluster task with scikit-learn's per-class seed",
            "notebook 003 used LogisticRegression(multi_class='ovr') inside OneVsRestClassifier: the parameter is "
            "gone from scikit-learn 1.9 and had no effect there (each fit is binary); "
            f"max_iter={p.logistic_max_iter}",
            f"libsvm's kernel cache is {p.cache_size} MB (the notebooks' SVC() used 200 MB): speed only",
        ],
    }


def scaled_sgd_cache(ctx: Context, sgd: SGDClassifier, rows: int) -> Cached:
    """Where the scaled SGD's 3-fold cross-validated decisions on the first ``rows`` images are shared."""
    return Cached.of(
        ctx,
        SCALED_SGD,
        computation="cross_val_predict decision_function",
        estimator=repr(sgd),
        preprocessing="StandardScaler on all rows",
        cv=f"StratifiedKFold({CV})",
        rows=rows,
    )


def _logistic_ovr(
    client: Client, X: np.ndarray, y: np.ndarray, seed: int, max_iter: int
) -> tuple[Pipeline, tasks.Pending]:
    """Notebook 003's pipeline: VarianceThreshold and StandardScaler fitted here, the 10 saga fits as tasks."""
    selection = VarianceThreshold().fit(X)
    scaling = StandardScaler().fit(selection.transform(X))
    features = scaling.transform(selection.transform(X))
    logistic = LogisticRegression(solver="saga", random_state=seed, max_iter=max_iter)
    model = Pipeline([("feature_selection", selection), ("feature_scaling", scaling), ("classification", logistic)])
    return model, tasks.one_vs_rest(client, logistic, tasks.scatter(client, features), y)


def _logistic_results(model: Pipeline, X_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Test accuracy, weighted F1, the per-digit table as printed by notebook 003, and the displays."""
    proba = model.predict_proba(X_test)
    y_pred = model.predict(X_test)
    table = _digit_table(y_test, y_pred, proba)
    matrix = confusion_matrix(y_test, y_pred, labels=DIGITS)
    estimators = model["classification"].estimators_
    coef = [
        model["feature_selection"].inverse_transform(model["feature_scaling"].inverse_transform(e.coef_))[0]
        for e in estimators
    ]
    wrong = np.flatnonzero(y_pred != y_test)
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
    displays += misclassified_digits(
        wrong,
        lambda i: f"#{i} {y_test[i]}→{y_pred[i]}",
        note="titles: test index, true → predicted (logistic regression)",
    )
    metrics = {
        "logistic_test_accuracy": float(accuracy_score(y_test, y_pred)),
        "logistic_f1_weighted": float(f1_score(y_test, y_pred, average="weighted")),
        "logistic_f1_macro": float(f1_score(y_test, y_pred, average="macro")),
        **{
            f"logistic_per_digit_{column}": [row[column] for row in table]
            for column in ("accuracy", "f1", "mean_neg_proba", "mean_pos_proba")
        },
        "logistic_confusion_matrix": matrix.tolist(),
    }
    return {"metrics": metrics, "report": displays}


def _displays(metrics: dict[str, Any]) -> list[spec.Display]:
    """The some_digit answers of every model, and the SGD cross-validation scores."""
    rows = [
        [
            "SVC, first 2,000 images (002)",
            metrics["svc_some_digit_prediction"],
            ", ".join(f"{s:.2f}" for s in metrics["svc_some_digit_scores"]),
        ],
        ["one-vs-rest SVC, first 2,000 images (002)", metrics["ovr_svc_some_digit_prediction"], ""],
        [
            "SGD, all images (001, 002)",
            metrics["sgd_some_digit_prediction"],
            ", ".join(f"{s:.0f}" for s in metrics["sgd_some_digit_scores"]),
        ],
    ]
    if "svc_full_some_digit_prediction" in metrics:
        rows.insert(
            2,
            [
                "SVC, all images (001)",
                metrics["svc_full_some_digit_prediction"],
                ", ".join(f"{s:.2f}" for s in metrics["svc_full_some_digit_scores"]),
            ],
        )
        rows.insert(3, ["one-vs-rest SVC, all images (001)", metrics["ovr_svc_full_some_digit_prediction"], ""])
    return [
        spec.table("What each model says of some_digit (a 5)", ["model", "prediction", "decision scores 0-9"], rows),
        spec.table(
            "SGD 3-fold cross-validation",
            ["pixels", "fold 1", "fold 2", "fold 3"],
            [["raw", *metrics["sgd_cv_scores"]], ["standardised", *metrics["sgd_scaled_cv_scores"]]],
        ),
    ]


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


def _accuracy(client: Client, model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a fitted model, its predictions computed on the cluster in chunks."""
    return float(accuracy_score(y, tasks.predict(client, model, X)))


def _count(pending: dict[str, tasks.Pending]) -> int:
    """How many tasks the pending work holds."""

    def count(futures: Any) -> int:
        return sum(count(f) for f in futures) if isinstance(futures, list) else 1

    return sum(count(p.futures) for p in pending.values())
