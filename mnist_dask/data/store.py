"""The Zarr v3 store: its layout, stage completion markers and provenance.

A *stage* is a group (``raw``, ``derived/<name>``) whose attributes say whether it is
complete and with which fingerprint (inputs + parameters). A stage marks itself
incomplete before writing and complete last, so readers can refuse half-written data
and a re-run with the same fingerprint can be skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import zarr
import zarr.errors

from mnist_dask import __version__
from mnist_dask.data.defaults import DEFAULT_STORE as DEFAULT_STORE  # re-exported
from mnist_dask.errors import UserError

if TYPE_CHECKING:
    import dask.array as da

ATTRS_KEY = "mnist_dask"


class Store:
    """A Zarr v3 store at a local path or any fsspec URL (``s3://...``)."""

    def __init__(self, url: str = DEFAULT_STORE, storage_options: dict[str, Any] | None = None):
        self.url = url if "://" in url else str(Path(url).expanduser().resolve())
        self.storage_options = storage_options or None

    def __str__(self) -> str:
        return self.url

    # -- reading ---------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a Zarr group exists at the URL."""
        try:
            self._group("r")
        except UserError:
            return False
        return True

    def stage_attrs(self, stage: str) -> dict[str, Any] | None:
        """The stage's ``mnist_dask`` attributes, or None if the stage was never started."""
        try:
            group = self._group("r")[stage]
        except (KeyError, UserError):
            return None
        attrs = group.attrs.get(ATTRS_KEY)
        return dict(attrs) if isinstance(attrs, dict) and attrs else None

    def is_complete(self, stage: str, fingerprint: dict[str, Any] | None = None) -> bool:
        """True if the stage finished (with this exact fingerprint, when one is given)."""
        attrs = self.stage_attrs(stage)
        if not attrs or not attrs.get("complete"):
            return False
        return fingerprint is None or attrs.get("fingerprint") == _jsonable(fingerprint)

    def read(self, path: str) -> da.Array:
        """A lazy dask array over a stored array; refuses arrays of an incomplete stage."""
        stage = stage_of(path)
        if not self.is_complete(stage):
            state = "incomplete" if self.stage_attrs(stage) else "missing"
            raise UserError(f"{self.url}: stage '{stage}' is {state}; run the stage that writes {path}")
        array = self._group("r")[path]
        if not isinstance(array, zarr.Array):
            raise UserError(f"{self.url}: {path} is a group, not an array")
        import dask.array as da  # here, not at the top: checking a store (info, a no-op ingest) needs no dask

        return da.from_zarr(array, chunks=array.chunks, name=f"read-{path.replace('/', '-')}")

    def read_xy(self, stage: str, split: str) -> tuple[da.Array, da.Array]:
        """A dataset split as ``(X (N, features), y (N,))``: flattened images, or stored features.

        Refuses arrays that cannot be a dataset: raw images that are not (N, 28, 28) uint8,
        labels that are not (N,) uint8, or counts that disagree.
        """
        group = self._group("r")
        key = "images" if f"{stage}/{split}/images" in group else "features"
        X, y = self.read(f"{stage}/{split}/{key}"), self.read(f"{stage}/{split}/labels")
        if stage == "raw" and (X.shape[1:] != (28, 28) or X.dtype != "uint8"):
            raise UserError(f"{self.url}: raw/{split}/images is {X.shape} {X.dtype}, expected (N, 28, 28) uint8")
        if y.ndim != 1 or y.dtype != "uint8" or y.shape[0] != X.shape[0]:
            raise UserError(
                f"{self.url}: {stage}/{split}/labels is {y.shape} {y.dtype}, "
                f"expected ({X.shape[0]},) uint8 to match {key}"
            )
        return X.reshape(X.shape[0], -1), y

    def walk(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(path, zarr node)`` for every group and array, depth first, sorted."""
        root = self._group("r")
        yield "", root
        yield from sorted(root.members(max_depth=None))

    # -- writing ---------------------------------------------------------------------
    def begin_stage(self, stage: str) -> None:
        """Clear the stage's group and mark it incomplete before anything is written."""
        root = self._group("a")
        group = root.create_group(stage, overwrite=True)
        group.attrs[ATTRS_KEY] = {"stage": stage, "complete": False}

    def write_target(self, path: str) -> dict[str, Any]:
        """Keyword arguments for ``da.to_zarr`` so workers write ``path`` straight to the store."""
        return {"url": self.url, "component": path, "overwrite": True, "storage_options": self.storage_options}

    def set_array_attr(self, path: str, key: str, value: Any) -> None:
        """Set one attribute on a stored array (e.g. its chunk checksums)."""
        self._group("a")[path].attrs[key] = _jsonable(value)

    def complete_stage(self, stage: str, fingerprint: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Record provenance and mark the stage complete: the very last write of a stage."""
        group = self._group("a")[stage]
        group.attrs[ATTRS_KEY] = _jsonable(
            {
                "stage": stage,
                "complete": True,
                "fingerprint": fingerprint,
                "provenance": {
                    **provenance,
                    "package_version": __version__,
                    "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
            }
        )

    # -- helpers ---------------------------------------------------------------------
    def _group(self, mode: Literal["r", "a"]) -> zarr.Group:
        try:
            return zarr.open_group(self.url, mode=mode, storage_options=self.storage_options, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            if mode == "a":  # creating: a local folder is made, so what is missing is a bucket (or the like)
                raise UserError(f"{self.url}: cannot create a Zarr store here (no such bucket or location)") from None
            raise UserError(f"{self.url}: no Zarr store here (run 'mnist-dask ingest' first)") from None


def stage_of(path: str) -> str:
    """The stage an array belongs to: ``raw/train/images`` -> ``raw``; ``derived/x/...`` -> ``derived/x``."""
    parts = path.strip("/").split("/")
    return "/".join(parts[:2]) if parts[0] == "derived" else parts[0]


def _jsonable(value: Any) -> Any:
    """Normalise tuples to lists etc., so fingerprints compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
