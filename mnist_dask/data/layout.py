"""What lies at a store's location, and whether its Zarr metadata can be read, file by file.

mnist-dask writes only into its own stores: a new or empty folder, or a Zarr v3 group whose
root carries the :data:`ROOT_KEY` attribute written when the store was created (stores made
before that marker are recognised by their ``raw`` stage). Another tool's Zarr store (v2 or
v3), a non-empty folder or a regular file is refused with one line, whose advice depends on whether the
command may create a store there (``ingest``: choose a new or empty folder) or only uses one (``info``:
give a store made by ``mnist-dask ingest``). Broken metadata is
named by its ``zarr.json`` file, found by reading every one of them (:func:`metadata_problems`).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec import AbstractFileSystem

from mnist_dask import __version__
from mnist_dask.errors import UserError
from mnist_dask.locations import USE_A_STORE_MADE_BY_INGEST

ROOT_KEY = "mnist_dask_store"  # root group attribute: this store was created by mnist-dask
STORE_FORMAT = 1
ATTRS_KEY = "mnist_dask"  # stage group attribute: completion, fingerprint, provenance
METADATA = "zarr.json"
_ZARR_V2_FILES = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata"})

State = Literal["absent", "empty", "ours", "unmarked"]


def root_marker() -> dict[str, Any]:
    """The root attribute that marks a store as created by mnist-dask."""
    return {"format": STORE_FORMAT, "created_by": f"mnist-dask {__version__}"}


@dataclass(frozen=True)
class Location:
    """A store URL opened as an fsspec filesystem and the path of the store's root in it."""

    url: str
    fs: AbstractFileSystem
    root: str

    @classmethod
    def of(cls, url: str, storage_options: dict[str, Any] | None) -> Location:
        """The filesystem behind ``url`` (local path or any fsspec URL)."""
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError, TypeError) as exc:
            raise UserError(f"{url}: cannot open this store location ({exc})") from None
        return cls(url, fs, root.rstrip("/"))

    def key(self, path: str) -> str:
        """The filesystem path of ``path`` (relative to the store's root)."""
        return posixpath.join(self.root, path) if path else self.root

    def name(self, path: str) -> str:
        """``path`` as the user sees it: the store URL joined with the relative path."""
        return f"{self.url.rstrip('/')}/{path}" if path else self.url

    def read_json(self, path: str) -> dict[str, Any]:
        """Parse the metadata document ``path`` (a ``.../zarr.json``); ValueError says what is wrong with it."""
        try:
            raw = self.fs.cat_file(self.key(path))
        except FileNotFoundError:
            raise ValueError("missing") from None
        return parse_metadata(raw)


def inspect(url: str, storage_options: dict[str, Any] | None, may_create: bool = True) -> State:
    """What is at ``url``: nothing, an empty folder, an mnist-dask store (marked or from before the marker).

    Anything else is refused with a one-line :class:`UserError`: a regular file, another tool's
    Zarr v2 or v3 store, a non-empty folder without ``zarr.json``, or an unreadable root ``zarr.json``.
    ``may_create``: the command may make a store here (its advice: another folder), else it only uses one.
    """
    place = Location.of(url, storage_options)
    fs, root = place.fs, place.root
    fs.invalidate_cache()  # object stores cache listings; the store may have changed since
    advice = _ONLY_OURS if may_create else USE_A_STORE_MADE_BY_INGEST
    if fs.isfile(root):
        raise UserError(f"{url}: is a file, not a store folder; {_ONLY_OURS_FILE if may_create else advice}")
    if not fs.exists(root):
        return "absent"
    names = {posixpath.basename(entry.rstrip("/")) for entry in fs.ls(root, detail=False)}
    if METADATA not in names:
        if names & _ZARR_V2_FILES:
            raise UserError(f"{url}: is a Zarr v2 store of another tool; {advice}")
        if names:
            raise UserError(f"{url}: is a folder that is not empty and holds no mnist-dask store; {advice}")
        return "empty"
    try:
        document = place.read_json(METADATA)
    except ValueError as exc:
        raise UserError(
            f"{place.name(METADATA)}: corrupt Zarr metadata ({exc}); the store cannot be opened: "
            "move it away and ingest again"
        ) from None
    if document.get("node_type") != "group":
        raise UserError(f"{url}: is a Zarr array, not an mnist-dask store; {advice}")
    if isinstance(document.get("attributes", {}).get(ROOT_KEY), dict):
        return "ours"
    if _has_raw_stage(place):
        return "unmarked"  # written before stores were marked: adopted (and marked) on the next write
    raise UserError(f"{url}: is a Zarr store that mnist-dask did not create; {advice}")


def store_around(path: Path) -> Path | None:
    """The Zarr store (v2 or v3) that the local ``path`` is or lies inside, or None.

    The store is the outermost of the nested folders holding Zarr metadata that ``path`` is in: a run
    or study folder there would be taken for a node of the store missing its metadata.
    """
    found = None
    for folder in (path.absolute(), *path.absolute().parents):
        if (folder / METADATA).is_file() or any((folder / name).is_file() for name in _ZARR_V2_FILES):
            found = folder
        elif found is not None:
            break
    return found


_ONLY_OURS = "mnist-dask writes only into its own stores: choose a new or empty --store"
_ONLY_OURS_FILE = "choose a new or empty folder (or an mnist-dask store)"


def _has_raw_stage(place: Location) -> bool:
    """Whether ``raw/zarr.json`` is an mnist-dask stage group (a store made before the root marker)."""
    try:
        document = place.read_json(f"raw/{METADATA}")
    except ValueError:
        return False
    return isinstance(document.get("attributes", {}).get(ATTRS_KEY), dict)


def parse_metadata(raw: bytes) -> dict[str, Any]:
    """A ``zarr.json`` document validated by Zarr's own metadata classes; ValueError names the problem."""
    from zarr.core.group import GroupMetadata
    from zarr.core.metadata.v3 import ArrayV3Metadata

    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {_first_line(exc)}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("zarr_format") != 3:
        raise ValueError(f"zarr_format is {document.get('zarr_format')!r}, expected 3")
    node_type = document.get("node_type")
    if node_type not in ("array", "group"):
        raise ValueError(f"node_type is {node_type!r}, expected 'array' or 'group'")
    try:
        (ArrayV3Metadata if node_type == "array" else GroupMetadata).from_dict(dict(document))
    except Exception as exc:  # Zarr raises KeyError, TypeError, ValueError, ... for invalid documents
        raise ValueError(f"invalid {node_type} metadata: {type(exc).__name__} {_first_line(exc)}") from None
    if not isinstance(document.get("attributes", {}), dict):
        raise ValueError("attributes is not a JSON object")
    return document


@dataclass(frozen=True)
class Scan:
    """Every ``zarr.json`` of a store read from the filesystem: the readable nodes and the problems."""

    nodes: dict[str, dict[str, Any]]  # node path ("" for the root) -> its parsed metadata document
    problems: list[tuple[str, str]]  # (metadata file path in the store, what is wrong), sorted


def scan(url: str, storage_options: dict[str, Any] | None) -> Scan:
    """Read every ``zarr.json`` under the store; note unreadable ones and folders missing theirs.

    A folder that holds Zarr nodes but has no ``zarr.json`` of its own counts as missing
    metadata (Zarr would silently skip everything below it when listing).
    """
    place = Location.of(url, storage_options)
    place.fs.invalidate_cache()
    files = [_relative(place, f) for f in place.fs.find(place.root)]
    documents = [f for f in files if posixpath.basename(f) == METADATA]
    folders = {posixpath.dirname(f) for f in documents}
    nodes: dict[str, dict[str, Any]] = {}
    problems = set()
    for path in documents:
        try:
            nodes[posixpath.dirname(path)] = place.read_json(path)
        except ValueError as exc:
            problems.add((path, f"corrupt Zarr metadata ({exc})"))
    arrays = [node for node, document in nodes.items() if document["node_type"] == "array"]
    missing = "missing Zarr metadata (the file was deleted)"
    for folder in sorted(folders):
        parent = posixpath.dirname(folder) if folder else None
        while parent is not None and parent not in folders and not any(_within(parent, a) for a in arrays):
            problems.add((posixpath.join(parent, METADATA), missing))
            folders.add(parent)
            parent = posixpath.dirname(parent) if parent else None
    unreadable = [posixpath.dirname(path) for path, _ in problems if path in documents]
    for file in files:  # chunks whose array lost its zarr.json: the array's folder is the first one below a group
        if posixpath.basename(file) == METADATA or any(_within(file, a) for a in [*arrays, *unreadable]):
            continue
        parts = file.split("/")
        below = next((i for i in range(len(parts)) if "/".join(parts[:i]) not in folders), None)
        if below is not None and below < len(parts):
            problems.add((posixpath.join(*parts[:below], METADATA), missing))
    return Scan(nodes, sorted(problems))


def metadata_problems(url: str, storage_options: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Every unreadable or missing ``zarr.json`` under the store, as (path in the store, problem), sorted."""
    return scan(url, storage_options).problems


def _relative(place: Location, path: str) -> str:
    return path.rstrip("/")[len(place.root) :].lstrip("/")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def remedy(url: str, stage: str) -> str:
    """How to re-create a stage whose stored data or metadata is damaged (the tail of an error line)."""
    if stage == "raw":
        return f"re-create the stage with 'mnist-dask ingest --force --store {url}' (and your --source)"
    return f"drop the stage with 'mnist-dask drop {stage} --store {url}'; the next run re-creates it"
