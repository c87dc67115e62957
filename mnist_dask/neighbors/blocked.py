"""Today's exact blocked k-NN kernel for one (test block, train block) pair: float32 GEMM, exact re-rank, certificate.

Squared distances are first approximated with one float32 GEMM (``|b|^2 - 2 a.b``; the per-row
constant ``|a|^2`` is added later), the ``k + margin`` smallest candidates of each row are
re-ranked with exact arithmetic, and a rigorous bound on the float32 error certifies that no row
missed a neighbour.  Rows the bound cannot certify are recomputed exactly over the whole block,
so the result is always exact.  "Exact" means: for integer (and bool) input, the true integer
squared distance (computed in float64, which is exact because every intermediate stays below
2**53); for float input, the float64 value of ``sum((a - b) ** 2)``.  Neighbours are ordered by
(squared distance, global train index): equal distances put the lower index first.
:mod:`mnist_dask.neighbors.pruned` uses this kernel where its lower bounds do not pay.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFAULT_MARGIN = 8  # extra approximate candidates per row kept for the exact re-rank
PAD_INDEX = np.iinfo(np.int64).max  # index of a missing neighbour (block smaller than k)
_SLAB_ELEMENTS = 1 << 24  # at most 64 MiB of float32 distances alive per block at once
_GATHER_ELEMENTS = 1 << 22  # at most 32 MiB of float64 gathered rows at once
_GROUP = 32  # group size of the group-minimum candidate pre-selection
_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53  # unit roundoff of float64
_UNDERFLOW = 2.0**-140  # per-coordinate allowance for float32 underflow (> 2**-149 ulp)
_F32_SAFE = 2.0**125  # norms below this cannot overflow float32 anywhere in the GEMM path


def block_kneighbors(
    test_block: np.ndarray,
    train_block: np.ndarray,
    train_offset: int,
    k: int,
    margin: int = DEFAULT_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest train rows of every test row within one block.

    Returns (squared distances float64 (n, k), global train indices int64 (n, k)), ordered by
    (distance, index); when the block has fewer than k rows the rest is (inf, int64 max).
    """
    test, train = _validated_pair(test_block, train_block)
    n, m = test.shape[0], train.shape[0]
    kk = min(k, m)
    dist = np.empty((n, kk), dtype=np.float64)
    idx = np.empty((n, kk), dtype=np.int64)
    if n and kk:
        # a column that is zero in every test row or every train row adds nothing to any dot
        # product: leaving it out of the GEMM is exact (MNIST blocks: about 25% fewer flops)
        active = np.flatnonzero(test.any(axis=0) & train.any(axis=0))
        integer = _is_integer(test) and _is_integer(train)
        width = _exact_float32_width(max(_max_abs(test), _max_abs(train))) if integer else 0
        prepared = _prepare_train(train, active, integer, width)
        step = max(1, _SLAB_ELEMENTS // m)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            dist[rows], idx[rows] = _slab_kneighbors(test[rows], prepared, kk, margin)
    return _padded(dist, idx + train_offset, k)


def merge_kneighbors(
    left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Combine two (distances, indices) results over disjoint train rows, keeping the k best.

    Order is (distance, index), so merging blocks in any tree shape gives the same answer.
    """
    k = left[0].shape[1]
    dist = np.concatenate([left[0], right[0]], axis=1)
    idx = np.concatenate([left[1], right[1]], axis=1)
    order = np.lexsort((idx, dist), axis=-1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


# ----------------------------------------------------------------------------- block kernel


class _Train(NamedTuple):
    """One train block with what every test slab needs: float32 copy, norms, error stats."""

    rows: np.ndarray  # the original rows
    active: np.ndarray  # the columns that can contribute to a dot product with this test block
    rows32: np.ndarray  # float32 copy of the active columns, for the GEMM
    norms64: np.ndarray  # |b|^2 in float64 (exact for integer input)
    norms32: np.ndarray  # |b|^2 rounded to float32
    integer: bool  # exact arithmetic is integer arithmetic (done in float64)
    exact_width: int  # integer dots over this many columns are exact in float32 (0: use float64)
    max_norm2: float  # max |b|^2
    max_norm: float  # max |b|
    max_norm32: float  # max |b'| of the float32 copy
    max_residual: float  # max |b - b'|
    gemm_safe: bool  # no float32 overflow possible, so the approximate path may be used


def _validated_pair(test: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both blocks as 2-D numeric arrays of the same width, finite, and exactly computable."""
    test, train = np.asarray(test), np.asarray(train)
    if test.ndim != 2 or train.ndim != 2 or test.shape[1] != train.shape[1]:
        raise ValueError(f"need 2-D blocks of equal width, got {test.shape} and {train.shape}")
    for block in (test, train):
        if block.dtype.kind not in "biuf":
            raise ValueError(f"features must be bool, integer or float, got {block.dtype}")
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise ValueError("features must be finite (found NaN or infinity)")
    if _is_integer(test) and _is_integer(train):
        bound = max(_max_abs(test), _max_abs(train))
        if 4.0 * test.shape[1] * bound * bound > 2.0**53:
            raise ValueError(f"integer features up to {bound} are too large for exact distances; pass floats")
    return test, train


def _prepare_train(train: np.ndarray, active: np.ndarray, integer: bool, exact_width: int) -> _Train:
    """Float32 copy of the active columns, norms and the error bound's maxima, once per block."""
    with np.errstate(over="ignore"):  # huge values overflow float32: gemm_safe is then False
        active_rows = np.take(train, active, axis=1)  # np.take: 2x faster than train[:, active]
        rows32 = active_rows.astype(np.float32)
    norms64 = _sq_norms(train)
    residual = _residual_norms(active_rows, rows32)
    max_norm2 = float(norms64.max(initial=0.0))
    max_norm32 = float(np.sqrt(_sq_norms(rows32).max(initial=0.0))) if residual.any() else np.sqrt(max_norm2)
    with np.errstate(over="ignore"):
        norms32 = norms64.astype(np.float32)
    return _Train(
        rows=train,
        active=active,
        rows32=rows32,
        norms64=norms64,
        norms32=norms32,
        integer=integer,
        exact_width=exact_width,
        max_norm2=max_norm2,
        max_norm=float(np.sqrt(max_norm2)),
        max_norm32=max_norm32,
        max_residual=float(residual.max(initial=0.0)),
        gemm_safe=max_norm2 < _F32_SAFE and train.shape[1] * _U32 < 0.5,
    )


def _slab_kneighbors(test: np.ndarray, train: _Train, k: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k best (squared distance, local index) per test row: approximate, re-rank, certify."""
    m = train.rows.shape[0]
    n_cand = min(k + max(0, margin), m)
    norms = _sq_norms(test)
    if n_cand == m or not train.gemm_safe or norms.max() >= _F32_SAFE:
        return _exact_topk(test, norms, train, k)
    approx = np.multiply(np.take(test, train.active, axis=1), -2.0, dtype=np.float32) @ train.rows32.T  # -2 a.b
    approx += train.norms32  # |b|^2 - 2 a.b: the row constant |a|^2 cannot change the order
    cand, cand_approx = _smallest_per_row(approx, n_cand)
    del approx
    exact = _exact_pairs(test, norms, train, cand)
    order = np.lexsort((cand, exact), axis=-1)
    cand, exact = np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1)
    threshold = cand_approx[:, -1].astype(np.float64) + norms  # every non-candidate is >= this - bound
    bound = _error_bound(test, norms, train)
    unsafe = ~(threshold - 2.0 * bound > exact[:, k - 1])  # the factor 2 is a safety margin
    dist, idx = exact[:, :k], cand[:, :k]
    if unsafe.any():
        dist[unsafe], idx[unsafe] = _exact_topk(test[unsafe], norms[unsafe], train, k)
    return dist, idx


def _error_bound(test: np.ndarray, norms: np.ndarray, train: _Train) -> np.ndarray:
    """Per-row bound on |approx - exact| of the float32 squared distances against any train row.

    Terms: norm rounding and the final float32 add; GEMM accumulation (gamma_d |a'||b'|, valid
    for any summation order, FMA or not); rounding of the inputs to float32; and underflow.
    """
    d = test.shape[1]
    gamma = d * _U32 / (1.0 - d * _U32)
    test32 = test.astype(np.float32)
    residual = _residual_norms(test, test32)
    norm = np.sqrt(norms)
    norm32 = np.sqrt(_sq_norms(test32)) if residual.any() else norm
    return (
        (2.0 * _U32 + (d + 4) * 8.0 * _U64) * (norms + train.max_norm2)
        + (2.0 * gamma + 6.0 * _U32) * norm32 * train.max_norm32
        + 2.0 * (residual * train.max_norm + norm32 * train.max_residual)
        + d * _UNDERFLOW
    )


def _smallest_per_row(values: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the c smallest entries of each row, ordered by (value, column).

    A cheap threshold (from group minima) keeps every entry that can qualify, and only those
    few are sorted; this is several times faster than np.argpartition on a wide block.
    """
    n, m = values.shape
    threshold = _selection_threshold(values, c)
    flat = np.flatnonzero(values <= threshold[:, np.newaxis])  # far faster than 2-D nonzero
    rows, cols = np.divmod(flat, m)
    kept = values.reshape(-1)[flat]
    order = np.lexsort((cols, kept, rows))
    rows, cols, kept = rows[order], cols[order], kept[order]
    counts = np.bincount(rows, minlength=n)
    rank = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    first = rank < c
    return cols[first].reshape(n, c).astype(np.int64), kept[first].reshape(n, c)


def _selection_threshold(values: np.ndarray, c: int) -> np.ndarray:
    """A per-row value with at least c entries at or below it (and usually few more).

    The c-th smallest of the minima of c or more disjoint column groups qualifies: each of
    those c groups holds an entry at or below it.
    """
    n, m = values.shape
    groups = m // _GROUP
    if groups < 2 * c:
        return np.partition(values, c - 1, axis=1)[:, c - 1]
    minima = values[:, : groups * _GROUP].reshape(n, _GROUP, groups).min(axis=1)
    if m > groups * _GROUP:
        tail = values[:, groups * _GROUP :].min(axis=1, keepdims=True)
        minima = np.concatenate([minima, tail], axis=1)
    return np.partition(minima, c - 1, axis=1)[:, c - 1]


def _exact_pairs(test: np.ndarray, norms: np.ndarray, train: _Train, cand: np.ndarray) -> np.ndarray:
    """Exact squared distances (n, c) from each test row to its candidate train rows."""
    n, c = cand.shape
    out = np.empty((n, c), dtype=np.float64)
    step = max(1, _GATHER_ELEMENTS // max(1, c * test.shape[1]))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        if train.exact_width:
            dots = _exact_integer_dots(test[rows], train.rows, cand[rows], train.exact_width)
            out[rows] = norms[rows, np.newaxis] + train.norms64[cand[rows]] - 2.0 * dots
            continue
        gathered = train.rows[cand[rows]].astype(np.float64)  # (s, c, d)
        a = test[rows].astype(np.float64)
        if train.integer:  # every term is an integer below 2**53, so this is exact
            dots = np.matmul(gathered, a[:, :, np.newaxis])[:, :, 0]
            out[rows] = norms[rows, np.newaxis] + train.norms64[cand[rows]] - 2.0 * dots
        else:
            out[rows] = _sum_sq_diff(gathered, a[:, np.newaxis, :])
    return out


def _exact_integer_dots(test: np.ndarray, train_rows: np.ndarray, cand: np.ndarray, width: int) -> np.ndarray:
    """Exact dot products (s, c) of small-integer rows, in float32 over column groups of `width`.

    Every partial sum within a group is an integer of magnitude at most 2**24, which float32
    holds exactly whatever the summation order; the groups are added in float64 (also exact).
    """
    gathered = train_rows[cand]  # (s, c, d) in the original small dtype
    a32 = test.astype(np.float32)[:, :, np.newaxis]
    dots = np.zeros(cand.shape)
    for start in range(0, test.shape[1], width):
        cols = slice(start, start + width)
        dots += np.matmul(gathered[:, :, cols].astype(np.float32), a32[:, cols])[:, :, 0]
    return dots


def _exact_float32_width(bound: int) -> int:
    """Columns per group for exact float32 dots of integers up to `bound` in magnitude (0: too few).

    Each product is at most bound**2 in magnitude, so a group of w columns sums to at most
    w * bound**2, which must not exceed 2**24.
    """
    width = int(2.0**24 // max(1, bound * bound))
    return width if width >= 64 else 0


def _exact_topk(test: np.ndarray, norms: np.ndarray, train: _Train, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (exact squared distance, local index) per row from the full block (fallback)."""
    rows64 = train.rows.astype(np.float64)
    if train.integer:  # exact: all integers below 2**53
        full = norms[:, np.newaxis] + train.norms64[np.newaxis, :] - 2.0 * (test.astype(np.float64) @ rows64.T)
    else:  # the reference formula, one test row at a time to bound memory
        full = np.empty((test.shape[0], rows64.shape[0]))
        for r, row in enumerate(test):
            full[r] = _sum_sq_diff(rows64, row.astype(np.float64))
    cols, dist = _smallest_per_row(full, k)
    return dist, cols


def _sum_sq_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The float64 reference formula sum((a - b)**2) over the last axis (same bits for any shape)."""
    diff = np.subtract(a, b)
    np.square(diff, out=diff)
    return diff.sum(axis=-1)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    """Row squared norms accumulated in float64 (exact for integer input).

    Small integers are summed in int32 when no row can overflow it (twice as fast, still exact);
    wider integer dtypes holding such small values are cast to int32 without loss.
    """
    if _is_integer(x) and x.size and x.shape[1] * float(_max_abs(x)) ** 2 < 2.0**31:
        return np.einsum("ij,ij->i", x, x, dtype=np.int32, casting="unsafe").astype(np.float64)
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


def _residual_norms(x: np.ndarray, x32: np.ndarray) -> np.ndarray:
    """Norm of what rounding each row to float32 lost (zero when float32 holds it exactly)."""
    if not _may_round(x):
        return np.zeros(x.shape[0])
    return np.sqrt(_sq_norms(x.astype(np.float64) - x32.astype(np.float64)))


def _may_round(x: np.ndarray) -> bool:
    """True when converting x to float32 can lose information."""
    return not (x.dtype.itemsize <= 2 or x.dtype == np.float32 or (_is_integer(x) and _max_abs(x) <= 2**24))


def _is_integer(x: np.ndarray) -> bool:
    """True for bool and integer dtypes, whose exact distances are integers."""
    return x.dtype.kind in "biu"


def _max_abs(x: np.ndarray) -> int:
    """Largest absolute value an integer block holds (from the dtype when that is small)."""
    if x.size == 0:
        return 0
    if x.dtype.kind == "b":
        return 1
    if x.dtype.itemsize <= 2:
        info = np.iinfo(x.dtype)
        return max(abs(int(info.min)), int(info.max))
    return max(abs(int(x.min())), abs(int(x.max())))


def _padded(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill up to k columns with (inf, int64 max), which sort after every real neighbour."""
    missing = k - dist.shape[1]
    if missing <= 0:
        return dist, idx
    n = dist.shape[0]
    return (
        np.hstack([dist, np.full((n, missing), np.inf)]),
        np.hstack([idx, np.full((n, missing), PAD_INDEX, dtype=np.int64)]),
    )
