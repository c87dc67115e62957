"""Notebook 003's SVC kernels: StandardScaler + one-vs-rest SVC (poly, rbf, sigmoid), and poly after VarianceThreshold.

All kernels' one-vs-rest fits (10 per kernel) are cluster tasks submitted together, so the
workers never wait for one kernel to finish before the next starts; predictions are computed
on the cluster in chunks. libsvm's kernel cache is a speed setting only.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.feature_selection import VarianceThreshold
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mnist_dask.experiments import Context, Result, experiment, tasks
from mnist_dask.experiments.common import first_rows_check, load_splits
from mnist_dask.experiments.params import Float, Options, Positive, RowSamples, default_list, parameters
from mnist_dask.report import spec

DIGITS = np.arange(10)


@parameters
class SvmKernelsParams(RowSamples):
    """Row samples (0: all), kernels, poly degree, the extra poly run's VarianceThreshold (0: none), cache MB."""

    kernels: Options[Literal["linear", "poly", "rbf", "sigmoid"]] = default_list("poly", "rbf", "sigmoid")
    degree: Positive = 3
    poly_variance_threshold: Float = 100.0
    cache_size: Positive = 1000


@experiment("svm_kernels", SvmKernelsParams, check=first_rows_check(test=("test_sample",)))
def svm_kernels(ctx: Context, p: SvmKernelsParams) -> Result:
    """Notebook 003: StandardScaler + OneVsRest(SVC) with each kernel, plus poly after VarianceThreshold(100)."""
    X, y, X_test, y_test = load_splits(ctx.store, p)
    variants: dict[str, tuple[str, float | None]] = {kernel: (kernel, None) for kernel in p.kernels}
    if p.poly_variance_threshold > 0:
        variants["poly_variance_threshold"] = ("poly", p.poly_variance_threshold)
    preprocessing, pending = {}, []
    for kernel, threshold in variants.values():
        steps = [("feature_selection", VarianceThreshold(threshold).fit(X))] if threshold else []
        selected = steps[0][1].transform(X) if steps else X
        steps.append(("feature_scaling", StandardScaler().fit(selected)))
        features = steps[-1][1].transform(selected)
        svc = SVC(kernel=kernel, degree=p.degree, cache_size=p.cache_size)
        preprocessing[(kernel, threshold)] = steps
        pending.append(tasks.one_vs_rest(ctx.client, svc, tasks.scatter(ctx.client, features), y))
    ctx.log(
        f"svm_kernels: {10 * len(variants)} one-vs-rest SVC fits ({', '.join(variants)}) as cluster tasks "
        f"on {len(y):,} images"
    )
    fitted = tasks.gather(ctx.client, *pending)
    metrics: dict[str, Any] = {}
    models: dict[str, str] = {}
    displays: list[spec.Display] = []
    for (name, (kernel, threshold)), ovr in zip(variants.items(), fitted):
        model = Pipeline([*preprocessing[(kernel, threshold)], ("classification", ovr)])
        y_pred = tasks.predict(ctx.client, model, X_test)
        metrics[f"{name}_test_accuracy"] = float(accuracy_score(y_test, y_pred))
        metrics[name] = {
            "test_accuracy": metrics[f"{name}_test_accuracy"],
            "f1_macro": float(f1_score(y_test, y_pred, average="macro")),
            "support_vectors": [int(e.n_support_.sum()) for e in ovr.estimators_],
        }
        if threshold:
            metrics[f"variance_threshold_{threshold:g}_selected_features"] = int(model[0].get_support().sum())
        models[name] = repr(model)
        displays.append(
            spec.confusion_matrix(f"Confusion matrix: {name}", confusion_matrix(y_test, y_pred, labels=DIGITS))
        )
        ctx.log(f"svm_kernels: {name}: test accuracy {metrics[f'{name}_test_accuracy']:.4f}")
    notes = [f"trained on the first {p.sample:,} training images only (the published figures use all 60,000)"]
    return {
        "model": {"pipelines": models, "train_rows": len(y), "test_rows": len(y_test)},
        "metrics": metrics,
        "report": displays,
        "notes": (notes if p.sample else [])
        + [
            "support_vectors lists the support-vector count of each of the 10 binary SVCs",
            f"libsvm's kernel cache is {p.cache_size} MB: speed only",
        ],
    }
