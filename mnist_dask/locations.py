"""Whether a location the user typed is a local path or a remote fsspec URL: one rule for every command.

A plain path and a ``file://`` URL name the local filesystem; any other ``PROTOCOL://`` is remote.
Free of heavy imports, so the command line can use it before loading fsspec, Zarr or Dask.
"""

from __future__ import annotations

from pathlib import Path

#: the advice for a command that only uses a store, given a place that holds none
USE_A_STORE_MADE_BY_INGEST = "give the folder or URL of a store made by 'mnist-dask ingest'"

FILE_SCHEME = "file://"


def local_path(location: str) -> Path | None:
    """The local path that ``location`` names (``file://`` removed, ``~`` expanded), or None for a remote URL
    such as ``s3://...``. A ``~`` the shell did not expand ($MNIST_DASK_STORE=~/...) still means home."""
    if "://" in location and not location.startswith(FILE_SCHEME):
        return None
    return Path(location.removeprefix(FILE_SCHEME)).expanduser()
