"""The Zarr v3 store: its layout, stage completion markers and provenance, verified reads, dropping stages.

A *stage* is a group (``raw``, ``derived/<name>``) whose attributes say whether it is
complete and with which fingerprint (inputs + parameters). A stage marks itself
incomplete before writing and complete last, so readers can refuse half-written data
and a re-run with the same fingerprint can be skipped. Every read checks each chunk
against the checksum its stage recorded (:mod:`mnist_dask.data.checksums`), so a damaged
store gives a one-line error, never different data. Only mnist-dask's own stores are
written to (:mod:`mnist_dask.data.layout`).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import zarr
import zarr.errors

from mnist_dask import __version__
from mnist_dask.data import layout
from mnist_dask.data.checksums import ChunkSource, checked_array, recorded_checksums
from mnist_dask.data.defaults import DEFAULT_STORE
from mnist_dask.data.layout import ATTRS_KEY, ROOT_KEY, Location
from mnist_dask.errors import UserError
from mnist_dask.locations import local_path

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["ATTRS_KEY", "DEFAULT_STORE", "ROOT_KEY", "Store", "stage_of"]
STAGE_NAME = re.compile(r"^(raw|derived/[A-Za-z0-9_.+-]+)$")


class Store:
    """A Zarr v3 store at a local path or any fsspec URL (``s3://...``)."""

    def __init__(
        self, url: str = DEFAULT_STORE, storage_options: dict[str, Any] | None = None, may_create: bool = True
    ):
        """``may_create``: whether the command may make the store (ingest, a job given a source), or only uses
        one (info, verify, drop, transform): what a refusal of another folder or tool's store advises."""
        path = local_path(url)  # file:// and ~ name local paths too (the same rule as the command line's)
        self.url = url if path is None else str(path.resolve())
        self.storage_options = storage_options or None
        self.may_create = may_create
        self._ours = False  # set once the location is known to hold an mnist-dask store

    def __str__(self) -> str:
        return self.url

    # -- reading ---------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether an mnist-dask store exists at the URL (another tool's store or a file is a UserError)."""
        return self._root() is not None

    def stage_attrs(self, stage: str) -> dict[str, Any] | None:
        """The stage's ``mnist_dask`` attributes, or None if the stage was never started."""
        root = self._root()
        if root is None:
            return None
        group = self._node(root, stage)
        if group is None:
            return None
        attrs = group.attrs.get(ATTRS_KEY)
        return dict(attrs) if isinstance(attrs, dict) and attrs else None

    def is_complete(self, stage: str, fingerprint: dict[str, Any] | None = None) -> bool:
        """True if the stage finished (with this exact fingerprint, when one is given)."""
        attrs = self.stage_attrs(stage)
        if not attrs or not attrs.get("complete"):
            return False
        return fingerprint is None or attrs.get("fingerprint") == _jsonable(fingerprint)

    def has(self, path: str) -> bool:
        """Whether the store holds a node (array or group) at ``path``; damaged metadata is a UserError."""
        root = self._root()
        return root is not None and self._node(root, path) is not None

    def read(self, path: str) -> da.Array:
        """A lazy dask array over a stored array whose every chunk is checked against its recorded MD5.

        Refuses arrays of an incomplete stage and arrays without usable checksums; a chunk
        that is missing, damaged or changed fails the task that reads it with one line.
        """
        stage = stage_of(path)
        if not self.is_complete(stage):
            state = "incomplete" if self.stage_attrs(stage) else "missing"
            raise UserError(f"{self.url}: stage '{stage}' is {state}; run the stage that writes {path}")
        array = self._array(path)
        expected = recorded_checksums(array)
        if expected is None:
            raise UserError(
                f"{self._name(path)}: no usable chunk checksums recorded, so its data cannot be trusted; "
                f"{layout.remedy(self.url, stage)}"
            )
        return checked_array(array, ChunkSource(self.url, path, tuple(expected), layout.remedy(self.url, stage)))

    def read_xy(self, stage: str, split: str) -> tuple[da.Array, da.Array]:
        """A dataset split as ``(X (N, features), y (N,))``: flattened images, or stored features.

        Refuses arrays that cannot be a dataset (checked on the metadata, before any chunk is
        read): raw images that are not (N, 28, 28) uint8, labels that are not (N,) uint8, or
        counts that disagree.
        """
        key = "features" if self.has(f"{stage}/{split}/features") else "images"
        X_meta, y_meta = self._array(f"{stage}/{split}/{key}"), self._array(f"{stage}/{split}/labels")
        if stage == "raw" and (X_meta.shape[1:] != (28, 28) or X_meta.dtype != "uint8"):
            raise UserError(
                f"{self.url}: raw/{split}/images is {X_meta.shape} {X_meta.dtype}, expected (N, 28, 28) uint8"
            )
        if len(y_meta.shape) != 1 or y_meta.dtype != "uint8" or y_meta.shape[0] != X_meta.shape[0]:
            raise UserError(
                f"{self.url}: {stage}/{split}/labels is {y_meta.shape} {y_meta.dtype}, "
                f"expected ({X_meta.shape[0]},) uint8 to match {key}"
            )
        X, y = self.read(f"{stage}/{split}/{key}"), self.read(f"{stage}/{split}/labels")
        return X.reshape(X.shape[0], -1), y

    def walk(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(path, zarr node)`` for every group and array, depth first, sorted.

        Damaged or missing metadata anywhere in the store is a one-line UserError naming the file.
        """
        root = self._group("r")
        problems = layout.metadata_problems(self.url, self.storage_options)
        if problems:
            raise self._damaged(*problems[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            members = sorted(root.members(max_depth=None))
        yield "", root
        yield from members

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

    def complete_stage(
        self,
        stage: str,
        fingerprint: dict[str, Any],
        provenance: dict[str, Any],
        arrays: list[str] | None = None,
    ) -> None:
        """Record provenance (and the arrays written, relative to the stage) and mark the stage complete.

        The very last write of a stage. The array list lets ``verify`` and reads tell an array
        whose metadata was deleted from one the stage never wrote.
        """
        group = self._group("a")[stage]
        group.attrs[ATTRS_KEY] = _jsonable(
            {
                "stage": stage,
                "complete": True,
                **({"arrays": sorted(arrays)} if arrays is not None else {}),
                "fingerprint": fingerprint,
                "provenance": {
                    **provenance,
                    "package_version": __version__,
                    "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
            }
        )

    def stages(self) -> list[str]:
        """Every stage folder in the store (``raw``, ``derived/<name>``), damaged ones included, sorted."""
        if self._root() is None:
            return []
        place = Location.of(self.url, self.storage_options)
        found = ["raw"] if place.fs.isdir(place.key("raw")) else []
        if place.fs.isdir(place.key("derived")):
            for entry in place.fs.ls(place.key("derived"), detail=False):
                name = posixpath.basename(entry.rstrip("/"))
                if place.fs.isdir(entry) and STAGE_NAME.match(f"derived/{name}"):
                    found.append(f"derived/{name}")
        return sorted(found)

    def dependents(self, stage: str) -> list[str]:
        """The stages computed from ``stage``: every derived stage for raw, ``<stage>+...`` chains otherwise."""
        prefix = "derived/" if stage == "raw" else f"{stage}+"
        return [other for other in self.stages() if other.startswith(prefix)]

    def drop_stage(self, stage: str, dependents: bool = False) -> list[str]:
        """Delete a stage (complete, incomplete or damaged) and return the stages deleted.

        A stage that others were computed from is refused unless ``dependents`` is true, which
        deletes them too (first, so no derived stage outlives its input).
        """
        if not STAGE_NAME.match(stage) or ".." in stage:
            raise UserError(f"{stage}: not a stage name; use raw or derived/<name> (see 'mnist-dask info')")
        self._group("r")  # refuses a missing store (creating none) and anything not an mnist-dask store
        if stage not in self.stages():
            known = ", ".join(self.stages()) or "none"
            raise UserError(f"{self.url}: no stage {stage} to drop (stages: {known})")
        below = self.dependents(stage)
        if below and not dependents:
            raise UserError(
                f"{self.url}: {len(below)} stage(s) were computed from {stage} ({', '.join(below)}); "
                "drop them first or pass --dependents"
            )
        place = Location.of(self.url, self.storage_options)
        dropped = []
        for name in [*sorted(below, key=len, reverse=True), stage]:
            place.fs.rm(place.key(name), recursive=True)
            dropped.append(name)
        place.fs.invalidate_cache()
        return dropped

    # -- helpers ---------------------------------------------------------------------
    def _root(self) -> zarr.Group | None:
        """The root group for reading, or None when nothing (or an empty folder) is at the URL."""
        if not self._ours:
            state = layout.inspect(self.url, self.storage_options, self.may_create)
            if state in ("absent", "empty"):
                return None
            self._ours = state == "ours"
        try:
            return zarr.open_group(self.url, mode="r", storage_options=self.storage_options, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return None
        except Exception as exc:
            raise self._unreadable("", exc) from None

    def _group(self, mode: Literal["r", "a"]) -> zarr.Group:
        """The root group; for writing (``a``) created and marked as ours when new."""
        if mode == "r":
            root = self._root()
            if root is None:
                raise UserError(f"{self.url}: no Zarr store here (run 'mnist-dask ingest' first)")
            return root
        if not self._ours:
            layout.inspect(self.url, self.storage_options, self.may_create)  # refuses a file, another tool's store
        try:
            root = zarr.open_group(self.url, mode="a", storage_options=self.storage_options, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):  # a local folder is made: a bucket is missing
            raise UserError(f"{self.url}: cannot create a Zarr store here (no such bucket or location)") from None
        except Exception as exc:
            raise self._unreadable("", exc) from None
        if not self._ours:
            if not isinstance(root.attrs.get(ROOT_KEY), dict):
                root.attrs[ROOT_KEY] = layout.root_marker()
            self._ours = True
        return root

    def _node(self, root: zarr.Group, path: str) -> zarr.Array | zarr.Group | None:
        """The node at ``path``, or None when absent; damaged metadata is a UserError naming the file."""
        try:
            return root[path]
        except KeyError:
            place = Location.of(self.url, self.storage_options)
            if not place.fs.exists(place.key(f"{path}/{layout.METADATA}")):
                return None
            raise self._unreadable(path, None) from None
        except Exception as exc:
            raise self._unreadable(path, exc) from None

    def _array(self, path: str) -> zarr.Array:
        """The array at ``path``: a UserError when it is absent (naming its deleted metadata) or is a group."""
        node = self._node(self._group("r"), path)
        if node is None:
            own = posixpath.join(path, layout.METADATA)
            if any(file == own for file, _ in layout.metadata_problems(self.url, self.storage_options)):
                raise self._damaged(own, "missing Zarr metadata (the file was deleted)")
            stage = stage_of(path)
            written = (self.stage_attrs(stage) or {}).get("arrays") or []
            if path.removeprefix(f"{stage}/") in written:
                raise UserError(
                    f"{self._name(path)}: missing, though stage {stage} wrote it; {layout.remedy(self.url, stage)}"
                )
            raise UserError(f"{self.url}: no array {path} in the store")
        if not isinstance(node, zarr.Array):
            raise UserError(f"{self.url}: {path} is a group, not an array")
        return node

    def _unreadable(self, path: str, exc: BaseException | None) -> UserError:
        """The error for a node Zarr could not open: the damaged metadata file if one is found."""
        problems = layout.metadata_problems(self.url, self.storage_options)
        own = [p for p in problems if p[0] == posixpath.join(path, layout.METADATA)]
        if own or problems:
            return self._damaged(*(own or problems)[0])
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}" if exc else "unknown"
        return UserError(f"{self._name(path)}: cannot be opened ({reason})")

    def _damaged(self, file: str, problem: str) -> UserError:
        """One line naming a damaged metadata file and how to re-create what it belonged to."""
        if file == layout.METADATA:
            return UserError(f"{self._name(file)}: {problem}; the store cannot be opened: move it away, ingest again")
        parts = file.split("/")
        stage_path = "/".join(parts[:-1])
        if parts[0] not in ("raw", "derived") or stage_path in ("derived",):
            return UserError(f"{self._name(file)}: {problem}; move the store away and ingest again")
        return UserError(f"{self._name(file)}: {problem}; {layout.remedy(self.url, stage_of(stage_path))}")

    def _name(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}" if path else self.url


def stage_of(path: str) -> str:
    """The stage an array belongs to: ``raw/train/images`` -> ``raw``; ``derived/x/...`` -> ``derived/x``;
    ``cache/x/...`` (results experiments share) -> ``cache/x``."""
    parts = path.strip("/").split("/")
    return "/".join(parts[:2]) if parts[0] in ("derived", "cache") else parts[0]


def _jsonable(value: Any) -> Any:
    """Normalise tuples to lists etc., so fingerprints compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
