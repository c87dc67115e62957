"""Pruned exact k-NN for one (test block, train block) pair: a narrow GEMM of lower bounds, a few exact distances.

Rows are first put in projected form (:mod:`mnist_dask.neighbors.projection`): per row a float32
vector of ``m + 1`` values and an error bound, from which one float32 GEMM of ``m + 2`` columns
gives, for every (query, train row) pair, a value ``S`` with ``|q - x| >= sqrt(S + |q^|^2 - G) -
E_q - E_x`` (the GEMM's own rounding ``G`` is bounded as in :mod:`mnist_dask.neighbors.blocked`).
The train rows are visited in steps; for each query the k best exact (distance, index) pairs
seen so far give a threshold ``T`` (the k-th exact distance: an upper bound of the true k-th
one), and only the rows whose bound is at most ``T`` get an exact distance: every other row is
proven farther than k rows already found.  The first step of a query without k neighbours
yet takes the ``k + margin`` rows of smallest bound as its first exact candidates.  A query
with too many survivors in a step is searched there by the plain blocked kernel.

Exact distances are the same values as the plain kernel's (integers exactly; floats as the
float64 ``sum((a - b) ** 2)``), so the result, ordered by (distance, index), is identical to
brute force.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np

from mnist_dask.neighbors import compiled
from mnist_dask.neighbors.blocked import (
    PAD_INDEX,
    _exact_float32_width,
    _is_integer,
    _max_abs,
    _prepare_train,
    _slab_kneighbors,
    _smallest_per_row,
    _sq_norms,
    _Train,
)
from mnist_dask.neighbors.projection import Projected, Projection, project_rows

SLAB_ROWS = 512  # queries per bound GEMM
STEP_ROWS = 8_192  # train rows per bound GEMM and exact pass
DENSE_FRACTION = 4  # a query keeping more than 1/4 of a step's rows (and more than DENSE_MIN_ROWS)
DENSE_MIN_ROWS = 256  # is searched there by the plain kernel
_PAIR_ELEMENTS = 1 << 18  # float elements of gathered train rows alive at once (about 1 MiB)
_MIN_BUCKET = 4  # queries' survivor lists are padded to a power of two at least this long
PENDING_PER_QUERY = 32  # survivors are verified once about this many per query have piled up (or at the end)
USE_COMPILED: bool | None = None  # exact integer distances by the compiled loop (else numpy); None: when available
STAT_KEYS = ("pairs", "dense_rows", "bounds_s", "select_s", "exact_s", "dense_s", "other_s")

_U32 = 2.0**-24
_U64 = 2.0**-53
_TINY32 = 2.0**-140
_TINY64 = 2.0**-1000
_F32_SAFE = 2.0**60  # projected norms below this cannot overflow float32 in the bound GEMM


class PreparedRows(NamedTuple):
    """A block of rows with what the pruned search needs, computed once per block.

    ``values`` holds the rows as given, except uint8 rows, which are stored as ``x - 128`` in
    int8 (same bytes, one XOR): exact dots of pixels are then float32-exact in one group and
    need no shift at gather time. ``gemm`` is ``[f, |f|^2]`` (train side) or ``[-2 f, 1]``
    (query side), float32; None when the rows cannot be projected (values too large), in
    which case the plain kernel is used.
    """

    values: np.ndarray
    shifted: bool  # values are uint8 rows minus 128, as int8
    projected: Projected | None
    gemm: np.ndarray | None
    integer: bool
    shifted_sq_norms: np.ndarray  # |values|^2 in float64 (exact for integers; empty for floats)
    bound: int  # max |value| over the block (integers)
    max_abs: int  # max |x| of the rows as given (integers)

    def raw(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Some rows as given (uint8 rows are restored from their shifted bytes)."""
        part = self.values[rows]
        return (part.view(np.uint8) ^ np.uint8(0x80)) if self.shifted else part


def prepare_rows(rows: np.ndarray, projection: Projection, side: str) -> PreparedRows:
    """Validate a block of rows and compute its projected form ('train' or 'query' side)."""
    rows = _validated(rows, projection.n_features)
    integer = _is_integer(rows)
    projected = project_rows(rows, projection) if rows.shape[0] else None
    gemm = None
    if projected is not None and (not projected.sq_norms.size or projected.sq_norms.max() < _F32_SAFE**2):
        n, width = projected.features.shape
        gemm = np.empty((n, width + 1), dtype=np.float32)
        if side == "train":
            gemm[:, :width] = projected.features
            gemm[:, width] = projected.sq_norms  # rounded to float32: counted in the threshold
        else:
            np.multiply(projected.features, -2.0, out=gemm[:, :width])  # exact: a power of two
            gemm[:, width] = 1.0
    shifted = rows.dtype == np.uint8
    values = (rows ^ np.uint8(0x80)).view(np.int8) if shifted else rows
    sq_norms = _sq_norms(values) if integer and rows.size else np.zeros(0)
    max_abs = _max_abs(rows) if integer else 0
    bound = 128 if shifted else max_abs
    return PreparedRows(values, shifted, projected, gemm, integer, sq_norms, bound, max_abs)


def pruned_kneighbors(
    query: PreparedRows,
    train: PreparedRows,
    train_offset: int,
    k: int,
    margin: int,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    stats: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest of each query among ``prior`` (global) and this block's train rows.

    Returns (squared distances float64 (n, k), global indices int64 (n, k)) ordered by
    (distance, index), (inf, int64 max) where fewer than k rows exist.  ``stats``, when given,
    is incremented with the work done (STAT_KEYS): exact pairs, queries searched densely in a
    step, and seconds spent on the bound GEMM, the selection, exact distances, dense fallbacks.
    """
    n, m = query.values.shape[0], train.values.shape[0]
    if prior is None:
        prior = (np.full((n, k), np.inf), np.full((n, k), PAD_INDEX, dtype=np.int64))
    best_d, best_i = prior[0].copy(), prior[1].copy()
    if n == 0 or m == 0:
        return best_d, best_i
    _check_exact_range(query, train)
    query, train = _aligned(query, train)
    if query.gemm is None or train.gemm is None:  # values too large for the float32 bounds
        return _dense_block(query, train, train_offset, k, margin, best_d, best_i)
    search = _BlockSearch(query, train, train_offset, k, margin)
    for start in range(0, n, SLAB_ROWS):
        rows = slice(start, start + SLAB_ROWS)
        best_d[rows], best_i[rows] = search.slab(rows, best_d[rows], best_i[rows])
    if stats is not None:
        for key, value in search.stats.items():
            stats[key] = stats.get(key, 0) + value
    return best_d, best_i


def merge_pairs(
    best_d: np.ndarray, best_i: np.ndarray, rows: np.ndarray, dist: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge (row, squared distance, global index) triples into per-row k best lists, by (distance, index).

    A (row, index) pair present twice counts once; padding entries (index int64 max) are kept.
    """
    n, k = best_d.shape
    all_rows = np.concatenate([np.repeat(np.arange(n), k), rows])
    all_d = np.concatenate([best_d.ravel(), dist])
    all_i = np.concatenate([best_i.ravel(), index])
    order = np.lexsort((all_i, all_d, all_rows))
    all_rows, all_d, all_i = all_rows[order], all_d[order], all_i[order]
    keep = np.ones(all_rows.size, dtype=bool)
    keep[1:] = (all_rows[1:] != all_rows[:-1]) | (all_i[1:] != all_i[:-1]) | (all_i[1:] == PAD_INDEX)
    all_rows, all_d, all_i = all_rows[keep], all_d[keep], all_i[keep]
    counts = np.bincount(all_rows, minlength=n)
    rank = np.arange(all_rows.size) - (np.cumsum(counts) - counts)[all_rows]
    first = rank < k
    return all_d[first].reshape(n, k), all_i[first].reshape(n, k)


class _BlockSearch:
    """The per-block state of the pruned search: constants of the bound, scratch space, dense fallbacks."""

    def __init__(self, query: PreparedRows, train: PreparedRows, offset: int, k: int, margin: int):
        assert query.projected is not None and train.projected is not None and train.gemm is not None
        self.query, self.train, self.offset, self.k, self.margin = query, train, offset, k, margin
        self.width = train.gemm.shape[1]  # m + 2
        tp = train.projected
        self.train_norm = float(np.sqrt(tp.sq_norms.max() * (1.0 + 2.0 * _gamma(self.width, _U64))))
        self.train_sq32 = float(train.gemm[:, -1].max())
        self.train_error = float(tp.error.max())
        qp = query.projected
        self.query_norms = np.sqrt(qp.sq_norms * (1.0 + 2.0 * _gamma(self.width, _U64)))
        d = query.values.shape[1]
        # float data: the exact value fl(sum((a-b)^2)) >= |a-b|^2 (1 - gamma_{d+3}) - d 2**-1074
        self.relative = 0.0 if (query.integer and train.integer) else _gamma(d + 3, _U64)
        self.absolute = 0.0 if (query.integer and train.integer) else d * 2.0**-1070
        self.dot_width = self._dot_width()
        self.query32: np.ndarray | None = None
        self.dense: dict[int, _Train] = {}
        # scratch reused by every step and batch: no large temporaries (a worker whose malloc returns
        # freed memory to the system at once, as dask's nannies configure it, would page-fault on each)
        # (kept per thread across blocks: a worker runs many blocks one after another)
        self.scratch: dict[str, np.ndarray] = _thread_scratch()
        size = min(SLAB_ROWS, query.values.shape[0]) * min(STEP_ROWS, train.values.shape[0])
        self.buffer = self._buffer("bounds", (size,), np.dtype(np.float32))
        self.mask = self._buffer("mask", (size,), np.dtype(bool))
        self.stats: dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        self.last = time.perf_counter()

    def slab(self, rows: slice, best_d: np.ndarray, best_i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k best of one slab of queries after visiting every step of the block."""
        assert self.query.gemm is not None and self.train.gemm is not None
        q = self.query.gemm[rows]
        ns, m = q.shape[0], self.train.values.shape[0]
        clock = self.clock
        pending_rows: list[np.ndarray] = []
        pending_cols: list[np.ndarray] = []
        pending = 0
        for start in range(0, m, STEP_ROWS):
            t = min(STEP_ROWS, m - start)
            bounds = self.buffer[: ns * t].reshape(ns, t)
            clock("other_s")
            np.matmul(q, self.train.gemm[start : start + t].T, out=bounds)
            clock("bounds_s")
            need = np.flatnonzero(np.isinf(best_d[:, -1]))
            if need.size:  # first exact candidates: the rows of smallest bound
                c = min(self.k + self.margin, t)
                cand, _ = _smallest_per_row(bounds if need.size == ns else bounds[need], c)
                clock("select_s")
                best_d, best_i = self._exact_merge(rows, np.repeat(need, c), cand.ravel() + start, best_d, best_i)
                bounds[need[:, np.newaxis], cand] = np.inf
            threshold = self._thresholds(rows, best_d[:, -1])
            below = np.less_equal(bounds, threshold[:, np.newaxis], out=self.mask[: ns * t].reshape(ns, t))
            flat = np.flatnonzero(below)
            pair_rows, cols = np.divmod(flat, t)
            counts = np.bincount(pair_rows, minlength=ns)
            heavy = counts > max(DENSE_MIN_ROWS, t // DENSE_FRACTION)
            clock("select_s")
            if heavy.any():
                light = ~heavy[pair_rows]
                pair_rows, cols = pair_rows[light], cols[light]
                best_d, best_i = self._dense_merge(rows, start, t, np.flatnonzero(heavy), best_d, best_i)
            pending_rows.append(pair_rows)
            pending_cols.append(cols + start)
            pending += pair_rows.size
            if pending >= PENDING_PER_QUERY * ns or start + t >= m:  # verify in batches: longer lists per query
                pair_rows, cols = np.concatenate(pending_rows), np.concatenate(pending_cols)
                order = np.argsort(pair_rows, kind="stable")
                best_d, best_i = self._exact_merge(rows, pair_rows[order], cols[order], best_d, best_i)
                pending_rows, pending_cols, pending = [], [], 0
        return best_d, best_i

    def clock(self, phase: str) -> None:
        """Charge the time since the last call to a phase of the stats."""
        now = time.perf_counter()
        self.stats[phase] += now - self.last
        self.last = now

    def _thresholds(self, rows: slice, kth: np.ndarray) -> np.ndarray:
        """Per query, the float32 value at or below which a bound S may hide a row nearer than kth.

        Prune iff S > (sqrt(T') + E_q + E_x)^2 - |q^|^2 (1 - g) + G, where T' covers the rounding of
        float exact distances and G the float32 GEMM's error and the rounding of |x^|^2 to float32.
        """
        assert self.query.projected is not None
        qp = self.query.projected
        w = self.width
        with np.errstate(over="ignore", invalid="ignore"):
            target = (kth + self.absolute) / (1.0 - self.relative)
            root = np.sqrt(target) * (1.0 + 4.0 * _U64)
            reach = root + qp.error[rows] + self.train_error
            sq_q = qp.sq_norms[rows]
            gemm_error = (
                _gamma(w, _U32) * (2.0 * self.query_norms[rows] * self.train_norm + self.train_sq32)
                + (_U32 + _gamma(w, _U64)) * 1.01 * self.train_norm**2
                + w * _TINY32
                + _gamma(w, _U64) * sq_q
            )
            threshold = reach * reach - sq_q + gemm_error
            threshold += 8.0 * _U64 * (reach * reach + sq_q + gemm_error) + _TINY64
            threshold = np.where(np.isfinite(kth), threshold, np.inf)
        return _round_up32(threshold)

    def _exact_merge(
        self, rows: slice, pair_rows: np.ndarray, cols: np.ndarray, best_d: np.ndarray, best_i: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact distances of (slab row, block row) pairs (sorted by slab row), merged into the slab's k best."""
        best = self._exact_merge_pairs(rows, pair_rows, cols, best_d, best_i)
        self.clock("exact_s")
        return best

    def _exact_merge_pairs(
        self, rows: slice, pair_rows: np.ndarray, cols: np.ndarray, best_d: np.ndarray, best_i: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """_exact_merge without the clock."""
        if pair_rows.size == 0:
            return best_d, best_i
        self.stats["pairs"] += int(pair_rows.size)
        dist = self._pair_distances(pair_rows + rows.start, cols)
        index = cols + self.offset
        kth_d, kth_i = best_d[pair_rows, -1], best_i[pair_rows, -1]
        enters = (dist < kth_d) | ((dist == kth_d) & (index < kth_i))  # most pairs cannot enter the k best
        pair_rows, dist, index = pair_rows[enters], dist[enters], index[enters]
        if pair_rows.size == 0:
            return best_d, best_i
        touched = np.flatnonzero(np.bincount(pair_rows, minlength=best_d.shape[0]))
        merged = merge_pairs(best_d[touched], best_i[touched], np.searchsorted(touched, pair_rows), dist, index)
        best_d[touched], best_i[touched] = merged
        return best_d, best_i

    def _pair_distances(self, qrows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact squared distances of the pairs (query row, train row); qrows sorted ascending.

        Integer rows: one compiled loop over the pairs when numba is there. Otherwise each
        query's train rows are gathered and dotted in one batched matrix-vector product, lists
        padded to powers of two so that a few batched calls cover every query.
        """
        use_compiled = compiled.available() if USE_COMPILED is None else USE_COMPILED
        if use_compiled and self.query.integer and self.train.integer:
            dots = compiled.integer_pair_dots(self.query.values, self.train.values, qrows, cols)
            return self.query.shifted_sq_norms[qrows] + self.train.shifted_sq_norms[cols] - 2.0 * dots
        out = np.empty(qrows.size)
        uniq, first, counts = np.unique(qrows, return_index=True, return_counts=True)
        rank = np.arange(qrows.size) - np.repeat(first, counts)
        sizes = np.maximum(_MIN_BUCKET, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))
        pair_size = np.repeat(sizes, counts)
        pair_slot = np.repeat(np.arange(uniq.size), counts)
        for size in np.unique(sizes):
            members = np.flatnonzero(sizes == size)
            slot_of = np.full(uniq.size, -1, dtype=np.int64)
            slot_of[members] = np.arange(members.size)
            chosen = np.flatnonzero(pair_size == size)
            padded = np.repeat(cols[first[members]], size).reshape(members.size, size)
            padded[slot_of[pair_slot[chosen]], rank[chosen]] = cols[chosen]
            dist = self._padded_distances(uniq[members], padded)
            out[chosen] = dist[slot_of[pair_slot[chosen]], rank[chosen]]
        return out

    def _padded_distances(self, qrows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact squared distances (s, c) of queries qrows to their train rows cols (s, c)."""
        s, c = cols.shape
        d = self.train.values.shape[1]
        out = np.empty((s, c))
        step = max(1, _PAIR_ELEMENTS // (c * d))
        for begin in range(0, s, step):
            part = slice(begin, begin + step)
            q, idx = qrows[part], cols[part]
            gathered = self._take(self.train.values, idx, "train")
            if self.query.integer and self.train.integer:
                dots = self._integer_dots(q, gathered)
                out[part] = self.query.shifted_sq_norms[q, np.newaxis] + self.train.shifted_sq_norms[idx] - 2.0 * dots
            else:  # the float64 reference formula sum((a - b)**2), in place
                diff = self._converted(gathered, np.float64, "diff")
                np.subtract(diff, self._take(self.query.values, q, "query")[:, np.newaxis, :], out=diff)
                np.square(diff, out=diff)
                out[part] = diff.sum(axis=-1)
        return out

    def _integer_dots(self, q: np.ndarray, gathered: np.ndarray) -> np.ndarray:
        """Exact dots of integer rows: float32 over column groups whose sums stay below 2**24 in magnitude."""
        width = self.dot_width
        if width == 0:  # too wide a product for float32 groups: float64 (exact below 2**53)
            a64 = self.query.values[q].astype(np.float64)[:, :, np.newaxis]
            return np.matmul(gathered.astype(np.float64), a64)[:, :, 0]
        if self.query32 is None:
            self.query32 = self.query.values.astype(np.float32)
        g32 = self._converted(gathered, np.float32, "g32")
        a = self._take(self.query32, q, "a32")[:, :, np.newaxis]
        d = g32.shape[2]
        if width >= d:
            return np.matmul(g32, a)[:, :, 0].astype(np.float64)
        dots = np.zeros(g32.shape[:2])
        for begin in range(0, d, width):
            cols = slice(begin, begin + width)
            dots += np.matmul(g32[:, :, cols], a[:, cols])[:, :, 0]
        return dots

    def _take(self, values: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
        """values[index] (whole rows) into a reused buffer."""
        out = self._buffer(name, (*index.shape, values.shape[1]), values.dtype)
        return np.take(values, index, axis=0, out=out, mode="clip")  # indices are valid: clip skips a copy

    def _converted(self, values: np.ndarray, dtype: type, name: str) -> np.ndarray:
        """values cast to dtype into a reused buffer."""
        out = self._buffer(name, values.shape, np.dtype(dtype))
        np.copyto(out, values, casting="unsafe")
        return out

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A view of a named scratch buffer, grown when needed."""
        size = int(np.prod(shape))
        held = self.scratch.get(name)
        if held is None or held.dtype != dtype or held.size < size:
            held = self.scratch[name] = np.empty(max(size, _PAIR_ELEMENTS), dtype=dtype)
        return held[:size].reshape(shape)

    def _dot_width(self) -> int:
        """Columns per exact float32 group for this pair of integer blocks (0: float64)."""
        if not (self.query.integer and self.train.integer):
            return 0
        product = max(1, self.query.bound) * max(1, self.train.bound)
        width = int(2.0**24 // product)
        return width if width >= 64 else 0

    def _dense_merge(
        self, rows: slice, start: int, t: int, heavy: np.ndarray, best_d: np.ndarray, best_i: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The plain blocked kernel on this step's train rows for the queries that kept too many."""
        prepared = self.dense.get(start)
        if prepared is None:
            step_rows = self.train.raw(slice(start, start + t))
            integer = self.query.integer and self.train.integer
            width = _exact_float32_width(max(self.query.max_abs, self.train.max_abs)) if integer else 0
            prepared = _prepare_train(step_rows, np.flatnonzero(step_rows.any(axis=0)), integer, width)
            self.dense[start] = prepared
        k = min(self.k, t)
        dist, idx = _slab_kneighbors(self.query.raw(rows)[heavy], prepared, k, self.margin)
        self.stats["dense_rows"] += int(heavy.size)
        merged = merge_pairs(best_d, best_i, np.repeat(heavy, k), dist.ravel(), (idx + start + self.offset).ravel())
        self.clock("dense_s")
        return merged


_SCRATCH = threading.local()


def _thread_scratch() -> dict[str, np.ndarray]:
    """This thread's scratch buffers (a few tens of MB at most), reused by every block it runs."""
    if not hasattr(_SCRATCH, "buffers"):
        _SCRATCH.buffers = {}
    return _SCRATCH.buffers


def _dense_block(
    query: PreparedRows, train: PreparedRows, offset: int, k: int, margin: int, best_d: np.ndarray, best_i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The plain blocked kernel on the whole block, merged with the prior."""
    from mnist_dask.neighbors.blocked import block_kneighbors

    dist, idx = block_kneighbors(query.raw(), train.raw(), offset, k, margin)
    n = query.values.shape[0]
    return merge_pairs(best_d, best_i, np.repeat(np.arange(n), k), dist.ravel(), idx.ravel())


def _aligned(query: PreparedRows, train: PreparedRows) -> tuple[PreparedRows, PreparedRows]:
    """Both blocks with values on the same footing: uint8 rows meeting other dtypes are unshifted."""
    if query.shifted == train.shifted:
        return query, train
    return _unshifted(query), _unshifted(train)


def _unshifted(block: PreparedRows) -> PreparedRows:
    """A block whose values are the rows as given."""
    if not block.shifted:
        return block
    raw = block.raw()
    return block._replace(values=raw, shifted=False, shifted_sq_norms=_sq_norms(raw), bound=block.max_abs)


def _validated(rows: np.ndarray, width: int) -> np.ndarray:
    """A 2-D numeric block of the projection's width with finite values."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != width:
        raise ValueError(f"need a 2-D block of {width} columns, got shape {rows.shape}")
    if rows.dtype.kind not in "biuf":
        raise ValueError(f"features must be bool, integer or float, got {rows.dtype}")
    if rows.dtype.kind == "f" and not np.isfinite(rows).all():
        raise ValueError("features must be finite (found NaN or infinity)")
    return rows


def _check_exact_range(query: PreparedRows, train: PreparedRows) -> None:
    """Integer distances must stay exact in float64, as in the plain kernel."""
    if query.integer and train.integer:
        bound = max(query.max_abs, train.max_abs)
        if 4.0 * query.values.shape[1] * bound * bound > 2.0**53:
            raise ValueError(f"integer features up to {bound} are too large for exact distances; pass floats")


def _round_up32(values: np.ndarray) -> np.ndarray:
    """The smallest float32 at or above each float64 value (so S <= result iff S <= value)."""
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    low = rounded.astype(np.float64) < values
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return rounded


def _gamma(n: int, u: float) -> float:
    """gamma_n = n u / (1 - n u)."""
    return n * u / (1.0 - n * u)
