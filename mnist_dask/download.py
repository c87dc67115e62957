"""Download files into a cache, checked against known MD5 sums, with retries.

A file is written to a temporary name and renamed only after its checksum matches,
so the cache never holds a partial or corrupt download.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import fsspec

from mnist_dask.errors import UserError

#: MD5 sums of the canonical MNIST files, as published with the dataset's mirrors.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Public mirrors of the IDX files, tried in order when ``--source idx`` names no location.
IDX_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def cache_dir() -> Path:
    """The download cache: ``$MNIST_DASK_CACHE``, else ``$XDG_CACHE_HOME/mnist-dask``."""
    if "MNIST_DASK_CACHE" in os.environ:
        return Path(os.environ["MNIST_DASK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-dask"


def fetch(url: str, md5: str | None, cache: Path | None = None, attempts: int = 3,
          backoff: float = 1.0) -> Path:
    """Return a local copy of ``url`` in the cache, downloading it if needed.

    A cached file is reused only if it matches ``md5``. Network errors are retried
    ``attempts`` times with exponential backoff; a checksum mismatch is not retried
    (the server sent the wrong bytes) and leaves nothing in the cache.
    """
    cache = cache or cache_dir()
    target = cache / url.rstrip("/").rsplit("/", 1)[-1]
    if target.exists() and (md5 is None or file_md5(target) == md5):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            with fsspec.open(url, "rb") as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            break
        except Exception as exc:  # any transport failure (aiohttp, fsspec, OS) is retried
            partial.unlink(missing_ok=True)
            if attempt == attempts:
                raise UserError(f"{url}: download failed after {attempts} attempts ({_one_line(exc)})") from None
            time.sleep(backoff * 2 ** (attempt - 1))
    actual = file_md5(partial)
    if md5 is not None and actual != md5:
        partial.unlink()
        raise UserError(f"{url}: checksum mismatch (md5 {actual}, expected {md5}); file not kept")
    partial.replace(target)
    return target


def file_md5(path: Path | str) -> str:
    """MD5 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
