"""Builders fitted on the training split only, then applied to both: StandardScaler, variance
threshold, PCA (dask-ml), and the mean images."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import dask.array as da
import numpy as np

from mnist_dask.data.sources import SPLITS
from mnist_dask.data.store import Store
from mnist_dask.transforms.arrays import Arrays, as_rows, carry_labels
from mnist_dask.transforms.names import number
from mnist_dask.transforms.parameters import ParameterError
from mnist_dask.transforms.randomized_pca import fit_randomized_pca


def build_scale(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """dask-ml StandardScaler fitted on the training split only, applied to both (float32)."""
    from dask_ml.preprocessing import StandardScaler

    flat = {split: as_rows(store.read(f"{input_stage}/{split}/images")).astype(np.float64) for split in SPLITS}
    scaler = StandardScaler().fit(flat["train"])
    arrays: Arrays = {}
    for split in SPLITS:
        arrays[f"{split}/features"] = scaler.transform(flat[split]).astype(np.float32)
        arrays.update(carry_labels(store, input_stage, split))
    arrays["mean"] = da.from_array(np.asarray(scaler.mean_))
    arrays["scale"] = da.from_array(np.asarray(scaler.scale_))
    return arrays


def build_variance_threshold(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Keep the pixels whose training-set variance exceeds the threshold (as sklearn's VarianceThreshold)."""
    flat = {split: as_rows(store.read(f"{input_stage}/{split}/images")) for split in SPLITS}
    variance = flat["train"].astype(np.float64).var(axis=0).compute()
    keep = variance > p["threshold"]
    if not keep.any():
        raise ParameterError(
            "varthresh",
            "threshold",
            f" must be below the largest pixel variance on train ({variance.max():g}) to keep a pixel, "
            f"got {p['threshold']:g}",
        )
    arrays: Arrays = {"selected": da.from_array(keep), "variance": da.from_array(variance)}
    for split in SPLITS:
        arrays[f"{split}/features"] = flat[split][:, keep]
        arrays.update(carry_labels(store, input_stage, split))
    return arrays


def build_mean(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """The mean training image overall and per digit (float64)."""
    images = store.read(f"{input_stage}/train/images").astype(np.float64)
    labels = store.read(f"{input_stage}/train/labels")
    per_class = da.stack([images[(labels == digit).compute()].mean(axis=0) for digit in range(10)])
    return {"mean_image": images.mean(axis=0), "per_class": per_class}


def build_pca(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """PCA fitted on the input's training rows only (``fit_on``: all, or the originals of an
    augmented input); both splits projected (float32).

    With ``scale_power`` p > 0 each feature is multiplied by explained_variance ** -p
    (partial whitening; p = 0.5 on unwhitened PCA equals ``whiten``). Also stores
    ``components`` (n_components, d), ``mean``, ``explained_variance`` and
    carries labels, ``source_index`` and (from an augmented input) ``copy``.
    """
    from dask_ml.decomposition import PCA

    flat = {
        split: as_rows(store.read_xy(input_stage, split)[0]).rechunk({0: p["chunk_size"], 1: -1}).astype(np.float32)
        for split in SPLITS
    }
    fit_rows = flat["train"]
    if p["fit_on"] == "originals" and store.has(f"{input_stage}/train/copy"):
        fit_rows = fit_rows[np.flatnonzero(store.read(f"{input_stage}/train/copy").compute() == 0)]
    rows, features = fit_rows.shape
    if not 1 <= p["n_components"] <= min(rows, features):
        limit = (
            f"{features} (the input's features)" if features <= rows else f"{rows} (the training rows it is fitted on)"
        )
        raise ParameterError("pca", "n_components", f" must be between 1 and {limit}, got {p['n_components']}")
    if resolve_solver(p["svd_solver"], p["n_components"], rows, features) == "randomized":
        fitted = fit_randomized_pca(fit_rows.rechunk({0: p["chunk_size"]}), p["n_components"], p["seed"])
        components, mean, variance = fitted.components, fitted.mean, fitted.explained_variance
        project: Callable[[da.Array], da.Array] = partial(fitted.transform, whiten=p["whiten"])
    else:  # dask-ml's exact SVD (full and tsqr are the same there)
        pca = PCA(
            n_components=p["n_components"], whiten=p["whiten"], svd_solver=p["svd_solver"], random_state=p["seed"]
        ).fit(fit_rows.rechunk({0: p["chunk_size"]}))
        components, mean, variance = pca.components_, pca.mean_, pca.explained_variance_
        project = pca.transform
    arrays: Arrays = {
        "components": da.from_array(np.asarray(components, dtype=np.float32)),
        "mean": da.from_array(np.asarray(mean, dtype=np.float32)),
        "explained_variance": da.from_array(np.asarray(variance)),
    }
    scale = (np.asarray(variance) ** -p["scale_power"]).astype(np.float32)
    for split in SPLITS:
        arrays[f"{split}/features"] = project(flat[split]).astype(np.float32) * scale
        arrays.update(carry_labels(store, input_stage, split))
    if store.has(f"{input_stage}/train/copy"):
        arrays["train/copy"] = store.read(f"{input_stage}/train/copy")
    return arrays


def resolve_solver(solver: str, n_components: int, rows: int, features: int) -> str:
    """The solver ``auto`` stands for, by dask-ml's rule: randomized when the input has over 500 rows or
    features and fewer than 80% of the smaller dimension are kept, else full; other solvers unchanged."""
    if solver != "auto":
        return solver
    large = max(rows, features) > 500 and n_components < 0.8 * min(rows, features)
    return "randomized" if large else "full"


def pca_name(p: dict[str, Any]) -> str:
    """``pca<n>``, ``w`` when whitened, ``p<power>`` when partially whitened (solver, seed and fit_on: marks,
    see registry)."""
    power = f"p{number(p['scale_power'])}" if p["scale_power"] else ""
    return f"pca{p['n_components']}" + ("w" if p["whiten"] else "") + power
