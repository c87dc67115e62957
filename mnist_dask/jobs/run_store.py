"""The store a finished run's images come from, for ``report`` and ``classify``: the run's own, or one the
user names (``--store``) only where it holds the same raw images (the run's store moved or copied).

Another store's digits would otherwise be drawn or fitted on as the run's own, without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.jobs.records import RESULT_FILE


def store_of_run(result: dict[str, Any], run_dir: Path, given: Store | None = None) -> Store | None:
    """The run's store: ``given`` (``--store``) when it is the one result.json names or holds the same raw images
    (the run's recorded inputs fingerprint), else a one-line UserError naming --store, ``given`` and the run's store.

    Without ``given``, the store result.json names (None when it names none).
    """
    own = Store(result["store"]) if isinstance(result.get("store"), str) else None
    if given is None or own is None or given.url == own.url:
        return given or own
    held = (given.stage_attrs("raw") or {}).get("fingerprint")
    if result.get("inputs") is None or held != result["inputs"]:
        raise UserError(
            f"--store: {given.url}: does not hold the images this run was made from ({Path(run_dir) / RESULT_FILE} "
            f"names the store {result['store']}); leave --store out to use the run's own store, or name a copy of it"
        )
    return given
