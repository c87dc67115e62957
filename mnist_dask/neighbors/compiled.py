"""Compiled loops (numba): the pruned k-NN's exact integer distances and the IDM distance; numpy does without.

Exact distances of the few (query, train row) pairs that survive the bounds are dot products of
gathered rows. numpy can only do that by gathering each pair's rows, casting them to float32
and calling a matrix-vector product (~0.4-0.5 us per 784-pixel pair here); one compiled loop
reads the int8/uint8 rows in place and accumulates in int64 (~0.15 us), exact for any integers
the kernels accept (``4 d max|x|^2 <= 2**53``). numba is a dependency of dask-ml, so it is
normally present; ``MNIST_DASK_NUMBA=0`` (or a failed import) selects the numpy path, which
gives the same values. Compiled code is cached on disk (``cache=True``): only the first run on
a machine pays the compilation (about 0.3 s per dtype pair).

The IDM loop (:mod:`mnist_dask.neighbors.idm`) computes, for a block of (query, reference)
pairs laid out with the pair index innermost, every warp's per-pixel context energies and
keeps the minimum, all in cache; numpy's version materialises each step as an array and
is about 4x slower (``benchmarks/idm.py``). Both compute the same float32 energies, box
sums and minima; only the order of the final float64 sum over pixels differs, so they
agree to float32 rounding.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np


@functools.cache
def _loops() -> tuple[Callable[..., None], Callable[..., None]] | None:
    """The compiled (pair-dot, IDM) loops, or None when numba is unavailable or switched off. Loaded on first use,
    so a process that only builds graphs (the command's) never imports numba."""
    if os.environ.get("MNIST_DASK_NUMBA", "1") == "0":
        return None
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba comes with dask-ml
        return None

    @njit(cache=True, nogil=True)
    def pair_dots(query, train, qrows, cols, out):  # pragma: no cover - compiled
        d = query.shape[1]
        for p in range(qrows.size):
            a = query[qrows[p]]
            b = train[cols[p]]
            acc = np.int64(0)
            for j in range(d):
                acc += np.int64(a[j]) * np.int64(b[j])
            out[p] = acc

    @njit(cache=True, nogil=True, fastmath=True)
    def idm_sums(query, refs, pairs, warp, context, out):  # pragma: no cover - compiled
        # query (ch, hc, wc * pairs): context-padded query gradients, pair innermost;
        # refs (ch, hc + 2 warp, (wc + 2 warp) * pairs): warp+context-padded references, likewise.
        ch, hc, wide = query.shape
        h, w = hc - 2 * context, wide // pairs - 2 * context
        size, inner = 2 * context + 1, w * pairs
        energy = np.empty((size, wide), dtype=np.float32)  # ring of the last `size` rows' pixel energies
        column = np.empty(wide, dtype=np.float32)
        box = np.empty(inner, dtype=np.float32)
        best = np.full((h, inner), np.inf, dtype=np.float32)
        for dy in range(2 * warp + 1):
            for dx in range(2 * warp + 1):
                offset = dx * pairs
                for y in range(hc):
                    row = energy[y % size]
                    q, r = query[0, y], refs[0, y + dy]
                    for t in range(wide):
                        d = q[t] - r[offset + t]
                        row[t] = d * d
                    for c in range(1, ch):
                        q, r = query[c, y], refs[c, y + dy]
                        for t in range(wide):
                            d = q[t] - r[offset + t]
                            row[t] += d * d
                    if y < size - 1:
                        continue
                    first = energy[0]
                    for t in range(wide):
                        column[t] = first[t]
                    for i in range(1, size):
                        more = energy[i]
                        for t in range(wide):
                            column[t] += more[t]
                    for t in range(inner):
                        box[t] = column[t]
                    for i in range(1, size):
                        shift = i * pairs
                        for t in range(inner):
                            box[t] += column[t + shift]
                    out_row = best[y - size + 1]
                    for t in range(inner):
                        out_row[t] = min(out_row[t], box[t])
        out[:] = 0.0
        for y in range(h):
            for t in range(inner):
                out[t % pairs] += best[y, t]

    return pair_dots, idm_sums


def available() -> bool:
    """True when the compiled loops can be used."""
    return _loops() is not None


def integer_pair_dots(query: np.ndarray, train: np.ndarray, qrows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact int64 dot products of query[qrows[p]] and train[cols[p]] for every pair p (integer rows)."""
    loops = _loops()
    if loops is None:
        raise RuntimeError("numba is not available; use the numpy path")
    out = np.empty(qrows.size, dtype=np.int64)
    loops[0](_contiguous(query), _contiguous(train), qrows.astype(np.int64), cols.astype(np.int64), out)
    return out


def idm_sums(query: np.ndarray, refs: np.ndarray, warp: int, context: int) -> np.ndarray:
    """IDM distance (p,) of each query (p, ch, h, w) to its reference (p, ch, h, w), both float32 gradients."""
    loops = _loops()
    if loops is None:
        raise RuntimeError("numba is not available; use the numpy path")
    p, ch = query.shape[:2]
    pad = warp + context
    q = np.pad(query, ((0, 0), (0, 0), (context, context), (context, context)))
    r = np.pad(refs, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty(p, dtype=np.float64)
    loops[1](
        np.ascontiguousarray(q.transpose(1, 2, 3, 0)).reshape(ch, q.shape[2], -1),
        np.ascontiguousarray(r.transpose(1, 2, 3, 0)).reshape(ch, r.shape[2], -1),
        p,
        warp,
        context,
        out,
    )
    return out


def _contiguous(values: np.ndarray) -> np.ndarray:
    """C-contiguous rows; bool rows as uint8 (same 0/1 values)."""
    values = np.ascontiguousarray(values)
    return values.view(np.uint8) if values.dtype == np.bool_ else values
