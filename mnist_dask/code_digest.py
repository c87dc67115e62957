"""A digest of the mnist_dask source files this process runs, to tell two installs of one version apart.

A version string says which release was installed, not which code: an editable install at another commit, or a
local edit, keeps the version. The digest covers every file of the package (modules and templates, not caches).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_digest() -> str:
    """The first 12 hex digits of a SHA-256 over the package's files, each named by its path in the package."""
    digest = hashlib.sha256()
    for path in sorted(_source_files(PACKAGE)):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _source_files(folder: Path) -> list[Path]:
    """Every file under the folder but Python's byte-code caches."""
    files = (path for path in folder.rglob("*") if path.is_file() and path.suffix not in {".pyc", ".pyo"})
    return [path for path in files if "__pycache__" not in path.relative_to(folder).parts]
