"""k-NN with several outputs (Hands-On ML chapter 3): multilabel (digit >= 7, odd) and multi-output denoising.

Multilabel finds every row's neighbours among its fold's training rows with one exact search for
all three folds (:func:`mnist_dask.neighbors.search.fold_neighbors`) and votes each label as
``KNeighborsClassifier`` does, which reproduces ``cross_val_predict``'s predictions.
Denoising uses our exact blocked :func:`mnist_dask.neighbors.knn.kneighbors` on the cluster and
takes, pixel by pixel, the most common clean value among the neighbours on the client, which
is what ``KNeighborsClassifier.predict`` does for multi-output targets.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold

from mnist_dask.experiments import Context, Result, experiment
from mnist_dask.experiments.common import first_rows_check, load_split, load_splits
from mnist_dask.experiments.params import Count, Positive, RowSamples, Seed, parameters
from mnist_dask.neighbors.knn import kneighbors, vote
from mnist_dask.neighbors.search import fold_neighbors
from mnist_dask.report import spec

CV = 3
LABELS = ("digit >= 7", "digit is odd")
NOISE_HIGH = 100  # np.random.randint(0, 100): noise 0..99
MODE_CHUNK = 500  # test rows per vectorised mode computation
MISCLASSIFIED_SHOWN = 40


@parameters
class MultilabelParams:
    """First ``sample`` training rows (0: all) and k."""

    sample: Count = 0
    n_neighbors: Positive = 5


@experiment("multilabel", MultilabelParams, check=first_rows_check())
def multilabel(ctx: Context, p: MultilabelParams) -> Result:
    """Exact k-NN on (digit >= 7, digit odd), 3-fold cross-validated predictions: macro and weighted F1."""
    X, digits = load_split(ctx.store, "train", p.sample, dtype=np.uint8)
    Y = multilabel_targets(digits)
    ctx.log(f"multilabel: exact {p.n_neighbors}-NN on {len(Y):,} images, one search for 3 folds")
    splits = list(KFold(CV).split(X))
    indices, distances = fold_neighbors(da.from_array(X, chunks=(5_000, -1)), splits, p.n_neighbors, ctx.client)
    Y_pred = multilabel_vote(Y, indices, distances)
    folds = [test for _, test in splits]
    # the notebooks' knn_clf.predict([some_digit]): the model fitted on every row asked about row 0
    some_distances, some_indices = ctx.client.compute(
        kneighbors(_rows(X[:1], 1), _rows(X, 10_000), p.n_neighbors), sync=True
    )
    some_digit_prediction = multilabel_vote(Y, some_indices, some_distances)[0]
    per_label = f1_score(Y, Y_pred, average=None)
    wrong = np.flatnonzero(np.any(Y_pred != Y, axis=1))
    shown = wrong[:MISCLASSIFIED_SHOWN]
    displays = [
        spec.table(
            "F1 per label",
            ["label", "F1", "images with the label"],
            [[name, f1, support] for name, f1, support in zip(LABELS, per_label, Y.sum(axis=0))],
            caption="3-fold cross-validated predictions on the training images",
        )
    ]
    if len(wrong):
        captions = [f"#{i} {digits[i]}: {_flags(Y_pred[i])}" for i in shown]
        displays.append(
            spec.digits(
                f"Training digits with a wrong label ({len(wrong):,} in all; the first {len(shown)})",
                [spec.stored_digits("train", shown, captions=captions)],
                caption="titles: training index, digit: the predicted labels (L: >= 7, O: odd)",
            )
        )
    return {
        "model": {
            "estimator": f"exact {p.n_neighbors}-NN, each label voted as KNeighborsClassifier"
            f"(n_neighbors={p.n_neighbors}) predicts multilabel targets",
            "cv": "KFold(3), unshuffled (cross_val_predict on multilabel y)",
            "labels": list(LABELS),
            "train_rows": len(Y),
        },
        "metrics": {
            "some_digit_prediction": [bool(flag) for flag in some_digit_prediction],
            "f1_macro": float(f1_score(Y, Y_pred, average="macro")),
            "f1_weighted": float(f1_score(Y, Y_pred, average="weighted")),
            "f1_large": float(per_label[0]),
            "f1_odd": float(per_label[1]),
            "exact_match_accuracy": float(np.mean(np.all(Y_pred == Y, axis=1))),
            "exact_match_cv_scores": [float(np.mean(np.all(Y[f] == Y_pred[f], axis=1))) for f in folds],
            "label_support": Y.sum(axis=0).tolist(),
        },
        "report": displays,
    }


def _flags(predicted: np.ndarray) -> str:
    """Predicted multilabel flags in two letters: L (large, >= 7) and O (odd), or '-' for each flag not set."""
    return ("L" if predicted[0] else "-") + ("O" if predicted[1] else "-")


@parameters
class DenoiseParams(RowSamples):
    """Row samples (0: all), the noise seed, k, and how many examples the report shows."""

    seed: Seed = 42
    n_neighbors: Positive = 5
    examples: Count = 10


@experiment("denoise", DenoiseParams, check=first_rows_check(test=("test_sample",)))
def denoise(ctx: Context, p: DenoiseParams) -> Result:
    """Multi-output k-NN from noisy to clean digits: fit on (noisy train, clean train), RMSE/PSNR on the test set."""
    X, _, X_test, _ = load_splits(ctx.store, p, dtype=np.int64)
    X_noisy, X_test_noisy = add_noise([X, X_test], p.seed)
    k = p.n_neighbors
    ctx.log(f"denoise: exact {k}-NN of {len(X_test):,} noisy test images among {len(X):,} noisy train images")
    _, indices = ctx.client.compute(kneighbors(_rows(X_test_noisy, 1_000), _rows(X_noisy, 10_000), k), sync=True)
    cleaned = neighbour_mode(X.astype(np.uint8), indices)
    average = _neighbour_mean(X, indices)
    shown = np.arange(min(p.examples, len(X_test)))
    return {
        "model": {
            "estimator": f"exact {k}-NN, per-pixel most common neighbour value "
            f"(KNeighborsClassifier(n_neighbors={k}) multi-output predict)",
            "noise": f"np.random.RandomState({p.seed}).randint(0, {NOISE_HIGH}, (n, 784)) drawn for "
            "the train images, then for the test images, added to the 0-255 pixels",
            "train_rows": len(X),
            "test_rows": len(X_test),
        },
        "metrics": {
            **_errors(cleaned, X_test),
            **{f"noisy_{k}": v for k, v in _errors(X_test_noisy, X_test).items()},
            **{f"neighbour_mean_{k}": v for k, v in _errors(average, X_test).items()},
        },
        "report": [
            spec.digits(
                "Denoised test digits",
                [
                    spec.inline_digits(X_test_noisy[shown], captions=[f"#{i}" for i in shown], label="noisy"),
                    spec.inline_digits(cleaned[shown], label="cleaned"),
                    spec.inline_digits(X_test[shown], label="original"),
                ],
                caption="columns: test index; the noisy inputs, the k-NN's output and the clean originals",
            )
        ]
        if len(shown)
        else [],
        "notes": [
            "notebook 001 draws unseeded noise; we seed it. neighbour_mean_* is the KNeighborsRegressor-style "
            "average of the neighbours' clean images, given for comparison; rmse/psnr are for the classifier",
            "psnr uses peak 255; noisy_* compare the noisy inputs (pixel values up to 354) with the clean test images",
        ],
    }


def multilabel_targets(digits: np.ndarray) -> np.ndarray:
    """The notebook's y_multilabel: columns (digit >= 7, digit is odd)."""
    return np.c_[digits >= 7, digits % 2 == 1]


def multilabel_vote(Y: np.ndarray, indices: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Each label column's uniform vote among the neighbours (ties to the smallest value), as scikit-learn."""
    columns = []
    for j in range(Y.shape[1]):
        classes = np.unique(Y[:, j])
        proba = vote(Y[indices, j], distances, "uniform", classes)
        columns.append(classes[np.argmax(proba, axis=1)])
    return np.stack(columns, axis=1)


def add_noise(images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Add uniform integer noise 0..99 to each array in turn from one RandomState(seed) stream, as int64."""
    rng = np.random.RandomState(seed)
    return [x.astype(np.int64) + rng.randint(0, NOISE_HIGH, x.shape) for x in images]


def neighbour_mode(clean: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per pixel, the most common clean value among each row's neighbours; ties go to the smallest (scipy's mode)."""
    out = np.empty((len(indices), clean.shape[1]), dtype=clean.dtype)
    for start in range(0, len(indices), MODE_CHUNK):
        values = clean[indices[start : start + MODE_CHUNK]].astype(np.int64)  # (rows, k, pixels)
        counts = (values[:, :, None, :] == values[:, None, :, :]).sum(axis=2)  # occurrences of each neighbour's value
        best = np.argmax(counts * 1024 - values, axis=1)  # most frequent, then smallest value
        out[start : start + MODE_CHUNK] = np.take_along_axis(values, best[:, None, :], axis=1)[:, 0]
    return out


def _neighbour_mean(clean: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Average of the neighbours' clean images (KNeighborsRegressor's uniform prediction)."""
    return np.concatenate([clean[indices[i : i + MODE_CHUNK]].mean(axis=1) for i in range(0, len(indices), MODE_CHUNK)])


def _errors(predicted: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """RMSE (0-255 scale), PSNR in dB (peak 255) and mean absolute error of predicted vs clean pixels."""
    diff = predicted.astype(np.float64) - clean.astype(np.float64)
    rmse = float(np.sqrt(np.mean(diff**2)))
    return {
        "rmse": rmse,
        "psnr_db": float(20 * np.log10(255.0 / rmse)) if rmse > 0 else float("inf"),
        "mae": float(np.mean(np.abs(diff))),
    }


def _rows(X: np.ndarray, chunk: int) -> da.Array:
    """A numpy matrix as a dask array chunked by rows (narrowest exact integer dtype)."""
    return da.from_array(X.astype(np.uint16), chunks=(chunk, -1))
