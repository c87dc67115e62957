"""Chunk checksums: recorded when a stage writes an array, checked by every read of it.

A stage records the MD5 of each chunk's values on the array (:data:`CHUNK_MD5_KEY`).
:func:`checked_array` is the lazy dask array every read goes through: each of its tasks
reads one chunk, hashes what it read and raises a one-line :class:`UserError` naming the
chunk's file when the chunk cannot be decoded or differs from what was recorded. Zarr
fills a missing chunk file with the fill value without a word; the checksum catches it.
The check runs where the chunk is read, in the same task, so it costs no second pass.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from dask.typing import Key

from mnist_dask.errors import UserError

if TYPE_CHECKING:  # dask.array is imported where an array is built: 'info' never loads it
    import dask.array as da

CHUNK_MD5_KEY = "mnist_dask_chunk_md5"


def block_md5(block: np.ndarray) -> str:
    """MD5 of a chunk's values (C order), independent of the codec it is stored with."""
    return hashlib.md5(np.ascontiguousarray(block).data).hexdigest()


def recorded_checksums(array: zarr.Array) -> list[str] | None:
    """The array's recorded chunk MD5s, one per chunk in C order, or None if absent or not that."""
    recorded = array.attrs.get(CHUNK_MD5_KEY)
    if not isinstance(recorded, list) or not all(isinstance(md5, str) for md5 in recorded):
        return None
    return list(recorded) if len(recorded) == math.prod(array.cdata_shape) else None


@dataclass(frozen=True)
class ChunkSource:
    """Where an array's chunks live and what they must hash to: what each read task needs to check its chunk."""

    store: str  # the store's URL
    path: str  # the array's path in the store, e.g. raw/train/images
    expected: tuple[str, ...]
    remedy: str  # how to fix the stage, the tail of the error line

    def problem(self, array: zarr.Array, index: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
        """Read chunk ``index``; returns (its values, None) or (None, what is wrong with it)."""
        try:
            block = np.asarray(array.blocks[index])
        except Exception as exc:  # any codec can fail on damaged bytes
            return None, f"cannot be decoded ({type(exc).__name__})"
        flat = int(np.ravel_multi_index(index, array.cdata_shape)) if index else 0
        if block_md5(block) != self.expected[flat]:
            return None, "differs from its recorded checksum (changed, truncated or deleted)"
        return block, None

    def error(self, array: zarr.Array, index: tuple[int, ...], what: str) -> UserError:
        """The one-line error for a bad chunk: its file, its index and rows, what is wrong, the remedy."""
        key = array.metadata.encode_chunk_key(index)
        rows = ""
        if index:
            first = index[0] * array.chunks[0]
            rows = f" (rows {first}-{min(first + array.chunks[0], array.shape[0]) - 1})"
        where = ".".join(map(str, index)) or "0"
        file = f"{self.store.rstrip('/')}/{self.path}/{key}"
        return UserError(f"{file}: chunk {where} of {self.path}{rows} {what}; {self.remedy}")


def read_checked_chunk(array: zarr.Array, index: tuple[int, ...], source: ChunkSource) -> np.ndarray:
    """(A task) one chunk's values, verified against its recorded checksum."""
    block, what = source.problem(array, index)
    if what is not None or block is None:
        raise source.error(array, index, what or "cannot be read")
    return block


def checked_array(array: zarr.Array, source: ChunkSource) -> da.Array:
    """A dask array over ``array`` whose every chunk is verified by the task that reads it.

    Dask chunks are the Zarr chunks, so block ``i`` is chunk ``i`` and its checksum applies.
    The graph's name includes the checksums: a re-created stage never reuses old results.
    """
    import dask.array as da

    if len(source.expected) != math.prod(array.cdata_shape):
        raise ValueError(f"{source.path}: {len(source.expected)} checksums for {math.prod(array.cdata_shape)} chunks")
    name = f"read-{source.path.replace('/', '-')}-{tokenize(source.store, source.path, source.expected)}"
    tasks: dict[Key, tuple[object, ...]] = {
        (name, *index): (read_checked_chunk, array, index, source) for index in np.ndindex(*array.cdata_shape)
    }
    chunks = _dask_chunks(array.shape, array.chunks)
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=())
    return da.Array(graph, name, chunks, dtype=array.dtype)


def _dask_chunks(shape: Sequence[int], chunk_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Zarr's regular chunking as dask's per-axis chunk sizes (the last one trimmed to the shape)."""
    return tuple(
        tuple(min(size, extent - start) for start in range(0, extent, size)) if extent else ()
        for extent, size in zip(shape, chunk_shape)
    )
