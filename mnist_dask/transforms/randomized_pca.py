"""Randomized PCA of a dask array, for ``transform pca --svd-solver randomized`` (and ``auto`` on large inputs).

dask-ml 2025.1.0's randomized PCA cannot serve: its ``transform`` fails under scikit-learn >= 1.8
(dask/dask-ml#1023: scikit-learn's tags read ``power_iteration_normalizer``, which dask-ml's PCA never sets),
and its fit runs no power iterations by default (on MNIST the 50th component it finds is nearly orthogonal to
the true one), while its un-normalised power iterations overflow float32 pixels. This fit is scikit-learn's
randomized solver (Halko et al.) on dask: the seeded sketch of dask's ``svd_compressed`` with 10 oversamples,
QR-normalised power iterations as many as scikit-learn's ``iterated_power='auto'``, and scikit-learn's signs.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

OVERSAMPLES = 10  # scikit-learn's n_oversamples


@dataclass(frozen=True)
class FittedPCA:
    """A fitted PCA: the training mean (d,), the components (k, d) and their explained variance (k,)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    def transform(self, rows: da.Array, whiten: bool) -> da.Array:
        """Project rows (n, d) on the components (n, k); whitened: each column scaled to unit variance."""
        projected = (rows - self.mean) @ self.components.T
        return projected / np.sqrt(self.explained_variance).astype(projected.dtype) if whiten else projected


def power_iterations(n_components: int, rows: int, features: int) -> int:
    """scikit-learn's ``iterated_power='auto'``: 7, or 4 when keeping 10% or more of the smaller dimension."""
    return 7 if n_components < 0.1 * min(rows, features) else 4


def fit_randomized_pca(rows: da.Array, n_components: int, seed: int) -> FittedPCA:
    """Fit ``n_components`` principal components of ``rows`` (n, d) by randomized SVD seeded by ``seed``.

    Each component's largest loading is positive (scikit-learn's ``svd_flip(u_based_decision=False)``).
    """
    n, d = rows.shape
    mean = rows.mean(axis=0)
    _, singular, components = da.linalg.svd_compressed(
        rows - mean,
        n_components,
        iterator="QR",
        n_power_iter=power_iterations(n_components, n, d),
        n_oversamples=OVERSAMPLES,
        seed=seed,
    )
    mean, singular, components = da.compute(mean, singular, components)
    largest = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
    components = components * np.where(largest < 0, -1, 1).astype(components.dtype)[:, None]
    return FittedPCA(np.asarray(mean), np.asarray(components), np.asarray(singular) ** 2 / (n - 1))
