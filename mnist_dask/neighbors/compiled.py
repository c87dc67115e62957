"""Compiled loops (numba) for the pruned k-NN's exact integer distances; numpy does the work without them.

Exact distances of the few (query, train row) pairs that survive the bounds are dot products of
gathered rows. numpy can only do that by gathering each pair's rows, casting them to float32
and calling a matrix-vector product (~0.4-0.5 us per 784-pixel pair here); one compiled loop
reads the int8/uint8 rows in place and accumulates in int64 (~0.15 us), exact for any integers
the kernels accept (``4 d max|x|^2 <= 2**53``). numba is a dependency of dask-ml, so it is
normally present; ``MNIST_DASK_NUMBA=0`` (or a failed import) selects the numpy path, which
gives the same values. Compiled code is cached on disk (``cache=True``): only the first run on
a machine pays the compilation (about 0.3 s per dtype pair).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def _load() -> Callable[..., None] | None:
    """The compiled pair-dot loop, or None when numba is unavailable or switched off."""
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

    return pair_dots


_PAIR_DOTS = _load()


def available() -> bool:
    """True when the compiled loop can be used."""
    return _PAIR_DOTS is not None


def integer_pair_dots(query: np.ndarray, train: np.ndarray, qrows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact int64 dot products of query[qrows[p]] and train[cols[p]] for every pair p (integer rows)."""
    if _PAIR_DOTS is None:
        raise RuntimeError("numba is not available; use the numpy path")
    out = np.empty(qrows.size, dtype=np.int64)
    _PAIR_DOTS(_contiguous(query), _contiguous(train), qrows.astype(np.int64), cols.astype(np.int64), out)
    return out


def _contiguous(values: np.ndarray) -> np.ndarray:
    """C-contiguous rows; bool rows as uint8 (same 0/1 values)."""
    values = np.ascontiguousarray(values)
    return values.view(np.uint8) if values.dtype == np.bool_ else values
