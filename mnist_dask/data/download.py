"""Download files into a cache, checked against known MD5 sums, with retries.

A file is accepted by the MD5 of its *content* (gunzipped when it is gzip data), since
mirrors re-compress files: the same MNIST content can come in other ``.gz`` bytes. The
canonical ``.gz`` MD5 is accepted as well (a quick check that needs no decompression).
A file is written to a temporary name and renamed only after its checksum matches, so
the cache never holds a partial or wrong download.

Why not pooch: it checks the hash of the downloaded bytes (here the content is what must
match), retries only ``requests`` errors, and speaks HTTP/FTP only, while a source here may
be any fsspec URL (``s3://...``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.core import OpenFile

from mnist_dask.data.defaults import CACHE_ENV
from mnist_dask.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 1 << 20
_RETRY_STATUSES = (408, 429)  # request timeout, too many requests: worth another try
#: aiohttp failures of the connection itself (a dropped server, a truncated body), named so that
#: a non-HTTP source need not import aiohttp
_TRANSIENT_AIOHTTP = {"ClientConnectionError", "ClientPayloadError", "ServerTimeoutError"}


class RemoteFileMissing(UserError):
    """The server (or filesystem) answered that the file does not exist: another name or mirror may have it."""


@dataclass(frozen=True)
class Checksum:
    """What a file must hold: content with this MD5 (after gunzip), or exactly these ``.gz`` bytes."""

    content_md5: str
    file_md5: str | None = None

    def check(self, path: Path) -> str | None:
        """None when the file is acceptable, else why not (the MD5 found)."""
        if self.file_md5 is not None and file_md5(path) == self.file_md5:
            return None
        found = content_md5(path)
        return None if found == self.content_md5 else f"content md5 {found}, expected {self.content_md5}"


#: The canonical MNIST files: MD5 of the uncompressed content, and of the published ``.gz``.
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": Checksum("6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": Checksum("a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": Checksum("2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": Checksum("27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
}

#: Public mirrors of the IDX files, tried in order when ``--source idx`` names no location.
IDX_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def cache_dir() -> Path:
    """The download cache: ``$MNIST_DASK_CACHE``, else ``$XDG_CACHE_HOME/mnist-dask``."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-dask"


def usable_cache_dir() -> Path:
    """The download cache (:func:`cache_dir`), made if need be; a one-line UserError naming it (and
    $MNIST_DASK_CACHE when it came from there) when it is a file or cannot be written."""
    cache = cache_dir()
    from_env = CACHE_ENV in os.environ
    name = f"{CACHE_ENV}={cache}" if from_env else str(cache)
    fix = f"set {CACHE_ENV} to a folder you can write" if from_env else f"set {CACHE_ENV} to a writable folder"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{name}: is a file (or lies under one); the download cache must be a folder: {fix}") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot make the download cache folder ({exc.strerror}); {fix}") from None
    if not os.access(cache, os.W_OK | os.X_OK):
        raise UserError(f"{name}: the download cache folder is not writable; {fix}")
    return cache


def fetch(
    url: str, checksum: Checksum | None, cache: Path | None = None, attempts: int = 3, backoff: float = 1.0
) -> Path:
    """Return a local copy of ``url`` in the cache, downloading it if needed.

    A cached file is reused only if it passes ``checksum``. Transient network errors (lost
    connections, timeouts, HTTP 5xx) are tried ``attempts`` times with exponential backoff;
    an answer that cannot change (404, 403, a checksum mismatch) is not retried and leaves
    nothing in the cache.
    """
    good = cached(url, checksum, cache)  # a good copy needs no writable cache
    if good is not None:
        return good
    if cache is None:
        cache = usable_cache_dir()  # the default cache, made; one line when it cannot be
    else:
        cache.mkdir(parents=True, exist_ok=True)
    target = _cache_path(url, cache)
    partial = target.with_name(target.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            with _open_stream(url) as src, open(partial, "wb") as dst:
                while block := src.read(_BLOCK):
                    dst.write(block)
            break
        except Exception as exc:  # transport failures come as aiohttp, fsspec and OS errors
            partial.unlink(missing_ok=True)
            if _missing(exc):  # the server answered: no such file (HTTP 404); retrying will not help
                raise RemoteFileMissing(f"{url}: {not_found(url)}") from None
            cause = exc.__cause__ if isinstance(exc, FileNotFoundError) and exc.__cause__ else exc
            if not _transient(cause):  # e.g. 403 or a refused request: the same answer again
                raise UserError(f"{url}: download failed ({_one_line(cause)})") from None
            if attempt == attempts:
                raise UserError(f"{url}: download failed after {attempts} attempts ({_one_line(cause)})") from None
            time.sleep(backoff * 2 ** (attempt - 1))
    problem = checksum.check(partial) if checksum is not None else None
    if problem is not None:
        partial.unlink()
        raise UserError(f"{url}: checksum mismatch ({problem}); file not kept")
    partial.replace(target)
    return target


def cached(url: str, checksum: Checksum | None, cache: Path | None = None) -> Path | None:
    """The cached copy of ``url`` when there is one that passes ``checksum``, without touching the network."""
    target = _cache_path(url, cache or cache_dir())
    return target if target.exists() and (checksum is None or checksum.check(target) is None) else None


def _cache_path(url: str, cache: Path) -> Path:
    """Where ``url`` is kept: the cache folder and the URL's last path part."""
    return cache / url.rstrip("/").rsplit("/", 1)[-1]


def file_md5(path: Path | str) -> str:
    """MD5 hex digest of a file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as f:
        return _md5(iter(lambda: f.read(_BLOCK), b""))


def content_md5(path: Path | str) -> str:
    """MD5 of a file's content: of the gunzipped data for a gzip file, else of its bytes.

    A gzip file that does not decompress has no content MD5: the MD5 of its bytes is given.
    """
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    if not gzipped:
        return file_md5(path)
    try:
        with gzip.open(path, "rb") as f:
            return _md5(iter(lambda: f.read(_BLOCK), b""))
    except (EOFError, OSError, zlib.error):
        return file_md5(path)


def _md5(blocks: Iterator[bytes]) -> str:
    digest = hashlib.md5()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def _open_stream(url: str) -> OpenFile:
    """Open ``url`` for one sequential read.

    HTTP is opened as a stream (``block_size=0``): fsspec's default random-access HTTP file
    needs range requests, which simple servers (``python -m http.server``) do not support.
    """
    if url.startswith(("http://", "https://")):
        return fsspec.open(url, "rb", block_size=0)
    return fsspec.open(url, "rb")


def _transient(exc: BaseException) -> bool:
    """Whether trying again may help: a lost, refused or timed-out connection, or a server-side
    HTTP status (5xx, 408, 429); not a client-side status (403, ...) or a refused request."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status >= 500 or status in _RETRY_STATUSES
    if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (OSError, TimeoutError)):  # includes aiohttp's connector errors and socket errors
        return True
    return any(kind.__name__ in _TRANSIENT_AIOHTTP for kind in type(exc).__mro__)


def _missing(exc: BaseException) -> bool:
    """Whether the failure says the file does not exist (fsspec also raises FileNotFoundError, chained
    to the real cause, when it cannot reach the server at all)."""
    if getattr(exc, "status", None) == 404:  # aiohttp's ClientResponseError
        return True
    cause = exc.__cause__
    return isinstance(exc, FileNotFoundError) and (
        cause is None or isinstance(cause, FileNotFoundError) or getattr(cause, "status", None) == 404
    )


def not_found(url: str) -> str:
    """How to say that ``url`` does not exist."""
    return "not found (the server answered 404)" if url.startswith(("http://", "https://")) else "no such file"


def _one_line(exc: BaseException) -> str:
    """The failure in words, without the URL again (the message starts with it)."""
    text = str(exc).strip().splitlines()
    reason = text[0] if text else ""
    if isinstance(exc, PermissionError):
        return f"access denied{': ' + reason if reason else ''}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{reason} ({type(exc).__name__})" if reason else type(exc).__name__
