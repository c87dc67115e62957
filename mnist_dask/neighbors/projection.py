"""The principal-component projection behind the pruned exact k-NN, and its rigorous lower bound.

For a fixed mean ``mu`` and a ``d x m`` matrix ``P`` with (nearly) orthonormal columns, each row x
becomes ``x^ = [P^T (x - mu), |r_x|]``, where ``r_x = (I - P P^T)(x - mu)`` is what the m components
leave out.  For any query q and train row x, with ``v = q - x``, ``a = P^T v`` and
``E = P^T P - I`` (``||E||_2 <= eps``)::

    |v|^2 = |a|^2 - a^T E a + |r_q - r_x|^2 >= (1 - eps) |a|^2 + (|r_q| - |r_x|)^2

(expand ``v = P a + (r_q - r_x)``; the residual part by the triangle inequality), so
``|q - x| >= |q^ - x^| - E_q - E_x``, where ``E_row`` bounds how far the stored float32 ``x^`` is
from the exact ``[P^T (x - mu), |r_x|]`` plus the ``eps`` term.  ``mu`` and ``P`` may be any
matrices: the inequality holds in exact arithmetic for whatever values are stored, so the
projection only decides how tight the bound is, never whether it is valid.  The lower bound
of every distance is then one GEMM of ``m + 2`` columns (see :mod:`mnist_dask.neighbors.pruned`).

The error terms (u: unit roundoff, gamma_n = n u / (1 - n u), valid for any summation order):
``y = fl(x - mu)`` is within ``u |x - mu|`` of the centred row; ``p = fl(y P)`` is within
``gamma_d ||P||_F |y| + ||P||_2 u |x - mu|`` of ``P^T (x - mu)``; ``|r|^2 = |x - mu|^2 - |a_x|^2 +
a_x^T E a_x`` is bracketed from the computed ``|y|^2 - |p|^2`` with every rounding counted, and
rounding ``[p, rho]`` to float32 costs ``u32 |[p, rho]|``.  Each bound is doubled for safety.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

DEFAULT_SAMPLE_ROWS = 4_000  # rows the covariance is estimated from (measured: 2,000 prune as well as 60,000)
MIN_FEATURES = 16  # narrower data is not pruned (see components_for_width)
MIN_TRAIN_ROWS = 4_096  # fewer train rows than this are searched by the plain blocked kernel

_U64 = 2.0**-53
_U32 = 2.0**-24
_TINY32 = 2.0**-140  # per-coordinate allowance for float32 subnormals (> 2**-150, their rounding error)
_TINY64 = 2.0**-1000  # per-term allowance for float64 underflow (> 2**-1074)
_PROJECT_ROWS = 512  # rows projected at once (keeps the float64 temporaries in cache)
_MAX_NORM = 2.0**60  # rows farther than this from the mean are not projected (float32 headroom)
_MAX_EPS = 1e-6  # P must be orthonormal to this precision


@dataclass(frozen=True)
class Projection:
    """A mean and ``m`` principal directions (float64), with proven bounds on their non-orthonormality.

    ``eps`` bounds ``||P^T P - I||_2`` and ``frobenius`` bounds ``||P||_F``; both are checked at
    construction, so every :class:`Projection` satisfies the assumptions of the error bounds.
    """

    mean: np.ndarray  # (d,) float64
    components: np.ndarray  # (d, m) float64, columns ~orthonormal
    eps: float
    frobenius: float

    @property
    def n_components(self) -> int:
        """m, the number of directions kept."""
        return int(self.components.shape[1])

    @property
    def n_features(self) -> int:
        """d, the width of the rows projected."""
        return int(self.components.shape[0])


class Projected(NamedTuple):
    """Rows in projected form: float32 ``[p, rho]`` (n, m + 1), and per-row error and norm bounds.

    ``error[i]`` bounds ``|hat_i - [P^T (x_i - mu), |r_i|]| + eps |P^T (x_i - mu)|`` (distance units).
    """

    features: np.ndarray  # (n, m + 1) float32
    sq_norms: np.ndarray  # (n,) float64: |features|^2 computed in float64 (relative error <= gamma_{m+1})
    error: np.ndarray  # (n,) float64


def components_for_width(n_features: int) -> int:
    """How many principal components the pruned search keeps for rows this wide (0: do not prune).

    The rule, m = min(80, d // 2) from 16 columns up, was chosen with benchmarks/knn_pruning.py
    (one core; ns per (query, train row); exact distances cost ~0.3 us per checked uint8 pair
    and ~1 us per float pair). On raw MNIST (784 uint8 columns), 60,000 train rows: m = 48, 64,
    80, 96 check 452, 234, 148, 95 rows per query and cost 6.6, 4.0, 3.6, 3.7 ns; on the 5x
    shifted set (300,000 rows) 463, 278, 188 rows for m = 64, 80, 96, with m = 80 and 96 level.
    On float local means (196, 100, 49 and 16 columns) every m from d/3 to d/2 was within noise
    of the best and 1.5-3x faster than the plain kernel. Narrower than 16 columns or with
    fewer than MIN_TRAIN_ROWS train rows, the plain kernel is used.
    """
    if n_features < MIN_FEATURES:
        return 0
    return int(min(80, n_features // 2))


def make_projection(mean: np.ndarray, components: np.ndarray) -> Projection:
    """A :class:`Projection` from any mean and (near-)orthonormal columns, with its bounds proven.

    Columns are re-orthonormalised (QR in float64) when they are not orthonormal to 1e-6.
    """
    mean = np.ascontiguousarray(mean, dtype=np.float64)
    components = np.ascontiguousarray(components, dtype=np.float64)
    d = components.shape[0]
    if mean.shape != (d,) or not (np.isfinite(mean).all() and np.isfinite(components).all()):
        raise ValueError(f"need a finite mean of shape ({d},) and finite components, got {mean.shape}")
    eps, frobenius = _orthonormality(components)
    if eps > _MAX_EPS:
        components = np.ascontiguousarray(np.linalg.qr(components)[0])
        eps, frobenius = _orthonormality(components)
        if eps > _MAX_EPS:
            raise ValueError("the projection's components are not orthonormal")
    return Projection(mean=mean, components=components, eps=eps, frobenius=frobenius)


def fit_projection_sample(sample: np.ndarray, n_components: int) -> Projection:
    """Mean and top principal directions of a sample of rows (covariance + eigh, float64 on the result)."""
    from scipy.linalg import eigh

    x = np.asarray(sample)
    d = x.shape[1]
    m = int(min(n_components, d))
    mean = x.mean(axis=0, dtype=np.float64)
    centred = (x - mean).astype(np.float32)  # precision only affects how tight the bound is
    cov = (centred.T @ centred).astype(np.float64)
    _, vectors = eigh(cov, subset_by_index=[d - m, d - 1])
    return make_projection(mean, vectors[:, ::-1])


def fit_projection(X: np.ndarray | da.Array, n_components: int, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> Projection:
    """Fit the projection on a spread-out sample of X's rows (computed now; dask input on the current scheduler)."""
    if isinstance(X, da.Array):
        (projection,) = dask.compute(lazy_projection(X, n_components, sample_rows))
        return projection
    x = np.asarray(X).reshape(len(X), -1)
    return fit_projection_sample(x[_sample_index(x.shape[0], sample_rows)], n_components)


def lazy_projection(X: da.Array, n_components: int, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> Delayed:
    """The projection of a dask array as one lazy task, fitted on the first rows of a few spread-out chunks.

    Whole chunks are sampled (not every n-th row) so that only a few chunks are read for it.
    """
    from dask import delayed

    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])
    pieces, rows = [], 0
    per_chunk = max(1, sample_rows // 8)
    for j in _sample_index(len(starts), 8):
        take = min(int(X.chunks[0][j]), per_chunk)
        pieces.append(X[int(starts[j]) : int(starts[j]) + take])
        rows += take
    sample = da.concatenate(pieces).rechunk({0: -1, 1: -1})
    return delayed(fit_projection_sample, pure=True)(sample.to_delayed().ravel()[0], n_components)


def project_rows(rows: np.ndarray, projection: Projection) -> Projected | None:
    """The rows' float32 projected features and rigorous per-row error bounds (None: values too large)."""
    n = rows.shape[0]
    m = projection.n_components
    features = np.empty((n, m + 1), dtype=np.float32)
    sq_norms, error = np.empty(n), np.empty(n)
    scratch = np.empty((min(n, _PROJECT_ROWS), projection.n_features))  # reused: no page faults per part
    projected = np.empty((min(n, _PROJECT_ROWS), m))
    for start in range(0, n, _PROJECT_ROWS):
        part = slice(start, start + _PROJECT_ROWS)
        y, p = scratch[: len(features[part])], projected[: len(features[part])]
        np.subtract(rows[part], projection.mean, out=y)
        np.matmul(y, projection.components, out=p)
        if not _project_part(y, p, projection, features[part], sq_norms[part], error[part]):
            return None
    return Projected(features=features, sq_norms=sq_norms, error=error)


def _project_part(
    y: np.ndarray, p: np.ndarray, projection: Projection, features: np.ndarray, sq_norms: np.ndarray, error: np.ndarray
) -> bool:
    """Fill features, sq_norms and error for a few centred rows y = fl(x - mu), p = fl(y P) (False: too far)."""
    d, m = projection.components.shape
    eps, frob = projection.eps, projection.frobenius
    y2 = np.einsum("ij,ij->i", y, y)
    p2 = np.einsum("ij,ij->i", p, p)
    g_d, g_m = _gamma(d, _U64), _gamma(m, _U64)
    norm_y = np.sqrt(y2 * (1.0 + 2.0 * g_d)) * (1.0 + 2.0 * _U64) + d * _TINY64  # >= |y|
    if y.size and not norm_y.max() < _MAX_NORM:
        return False
    centred = norm_y * (1.0 + 4.0 * _U64)  # >= |x - mu|
    err_p = g_d * frob * norm_y + (1.0 + eps) * _U64 * centred + (d + m) * _TINY64  # >= |p - P^T (x - mu)|
    norm_a = np.sqrt(p2 * (1.0 + 2.0 * g_m)) * (1.0 + 2.0 * _U64) + err_p + m * _TINY64  # >= |P^T (x - mu)|
    spread = (
        g_d * norm_y**2  # |y|^2 vs its computed value
        + 3.0 * _U64 * centred**2  # |x - mu|^2 vs |y|^2
        + g_m * norm_a**2  # |p|^2 vs its computed value
        + err_p * (2.0 * norm_a + err_p)  # |a|^2 vs |p|^2
        + eps * norm_a**2  # the a^T E a term
        + 2.0 * _U64 * (y2 + p2)  # the subtraction y2 - p2 and this sum itself
        + (d + m) * _TINY64  # underflow in the sums of squares
    ) * 2.0
    low = np.sqrt(np.maximum(y2 - p2 - spread, 0.0)) * (1.0 - 4.0 * _U64)
    high = np.sqrt(np.maximum(y2 - p2 + spread, 0.0)) * (1.0 + 4.0 * _U64)
    features[:, :m] = p
    features[:, m] = 0.5 * (low + high)  # |r| lies in [low, high]
    hat = np.sqrt(norm_a**2 + high**2)  # >= |[p, rho]|
    error[:] = 2.0 * (
        err_p
        + 0.5 * (high - low) * (1.0 + 4.0 * _U64)
        + 4.0 * _U64 * high  # rounding of rho itself
        + _U32 * hat * (1.0 + 1e-6)  # float64 -> float32
        + (m + 1) * _TINY32  # float32 subnormals
        + eps * norm_a
    )
    sq_norms[:] = np.einsum("ij,ij->i", features, features, dtype=np.float64)
    return True


def _orthonormality(components: np.ndarray) -> tuple[float, float]:
    """Proven upper bounds on ||P^T P - I||_2 and ||P||_F for the stored float64 P."""
    d, m = components.shape
    frob2 = float(np.einsum("ij,ij->", components, components))
    frobenius = float(np.sqrt(frob2 * (1.0 + _gamma(d * m, _U64)))) * (1.0 + 4.0 * _U64)
    gram = components.T @ components - np.eye(m)
    # computed gram is within gamma_d (|P|^T |P|) of the exact one; ||.||_F of that <= gamma_d ||P||_F^2
    eps = float(np.sqrt(np.einsum("ij,ij->", gram, gram))) * (1.0 + _gamma(m * m + 2, _U64))
    eps += _gamma(d + 1, _U64) * frobenius**2
    return eps * 2.0, frobenius


def _gamma(n: int, u: float) -> float:
    """gamma_n = n u / (1 - n u), the relative error bound of an n-term sum or dot product."""
    return n * u / (1.0 - n * u)


def _sample_index(n: int, count: int) -> np.ndarray:
    """At most `count` distinct indices spread evenly over range(n)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, count)).astype(np.int64)) if n else np.zeros(0, np.int64)
