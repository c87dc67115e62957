"""Hands-On ML chapter 3's error analysis: the scaled SGD's 3-fold confusion matrix, normalised, and the 3/5 grid.

The scaled SGD's cross-validated decisions are the very ones ``multiclass`` computes; they are
shared through the store (:mod:`mnist_dask.experiments.cache`), so whichever job runs second
reads them instead of fitting 30 SGDs again.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from mnist_dask.experiments import Context, Result, experiment, tasks
from mnist_dask.experiments.common import first_rows_check, fold_accuracies, load_split
from mnist_dask.experiments.multiclass import CV, DIGITS, scaled_sgd_cache
from mnist_dask.experiments.params import Positive, TrainSample, parameters
from mnist_dask.report import spec


@parameters
class ErrorAnalysisParams(TrainSample):
    """First ``sample`` training rows (0: all), the SGD seed, images per quadrant of the 3-vs-5 grid."""

    pairs: Positive = 25


@experiment("error_analysis", ErrorAnalysisParams, check=first_rows_check())
def error_analysis(ctx: Context, p: ErrorAnalysisParams) -> Result:
    """Confusion matrix of the scaled SGD's 3-fold predictions, normalised by row and by column, and the 3/5 grid."""
    X, y = load_split(ctx.store, "train", p.sample)
    sgd = SGDClassifier(random_state=p.random_state)
    folds = list(StratifiedKFold(CV).split(X, y))
    shared = scaled_sgd_cache(ctx, sgd, len(y))
    cached = shared.load(ctx, ("decisions",))
    if cached is not None:
        ctx.log("error_analysis: the scaled SGD's cross-validated decisions, from the store")
        decisions = cached["decisions"]
    else:
        X_scaled = StandardScaler().fit_transform(X)  # fitted on all rows, as notebook 001
        ctx.log(f"error_analysis: scaled SGD, {CV * len(DIGITS)} (fold, class) fits as cluster tasks")
        [decisions] = tasks.gather(
            ctx.client,
            tasks.sgd_cross_val_decisions(ctx.client, sgd, tasks.scatter(ctx.client, X_scaled), X_scaled, y, folds),
        )
        shared.save(ctx, {"decisions": decisions})
    y_pred = tasks.decisions_to_labels(decisions, np.unique(y))
    matrix = confusion_matrix(y, y_pred, labels=DIGITS)
    quadrants = [
        spec.stored_digits("train", np.flatnonzero((y == a) & (y_pred == b))[: p.pairs], label=f"{a} as {b}")
        for a in (3, 5)
        for b in (3, 5)
    ]
    errors_only = "the diagonal is set to 0 to show only the errors"
    return {
        "model": {
            "estimator": repr(sgd),
            "preprocessing": "StandardScaler fitted on the whole training set (as the notebook does)",
            "cv": CV,
            "train_rows": len(y),
        },
        "metrics": {
            "confusion_matrix": matrix.tolist(),
            "cv_scores": fold_accuracies(y, y_pred, [test for _, test in folds]),
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
