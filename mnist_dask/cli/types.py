"""Click parameter types for what click does not know: memory sizes, KEY=VALUE pairs, store locations,
MNIST sources, finite durations. Each refuses a bad value at parse time with one clause naming it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from mnist_dask.errors import UserError
from mnist_dask.locations import USE_A_STORE_MADE_BY_INGEST, local_path

MIN_WORKER_MEMORY = 256 * 2**20  # a worker process with the study's libraries loaded takes ~160 MB


class MemorySize(click.ParamType):
    """``auto`` or a size such as ``3GB``/``512MiB``, at least what a worker needs to start."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The size as typed, once Dask can read it and it is large enough."""
        if value == "auto":
            return value
        from dask.utils import format_bytes, parse_bytes

        try:
            size = parse_bytes(str(value))
        except (ValueError, TypeError):
            self.fail(f"{value!r} is not a size; use e.g. 3GB, 512MiB or auto", param, ctx)
        if size < MIN_WORKER_MEMORY:
            self.fail(
                f"{value} is too small: a worker process needs at least {format_bytes(MIN_WORKER_MEMORY)}", param, ctx
            )
        return str(value)  # as typed (Dask reads it alike), so messages repeat the user's words


class KeyValue(click.ParamType):
    """``KEY=VALUE`` as a ``(key, value)`` pair."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        """Split at the first ``=``."""
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key.strip(), text


class StoreLocation(click.ParamType):
    """A Zarr store: a local folder path (which must not be a file, nor lie under one) or an fsspec URL
    whose protocol is known and whose backend is installed."""

    name = "store"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The location as typed, once it can be a store."""
        text = str(value)
        if not text.strip():
            self.fail("empty; give a folder path or a URL", param, ctx)
        path = local_path(text)
        if path is None:
            problem = _process_local(text) or _unusable_protocol(text)
            if problem:
                self.fail(f"{text}: {problem}", param, ctx)
            return text
        for ancestor in (path, *path.parents):
            if ancestor.exists():
                if not ancestor.is_dir():
                    where = "is a file" if ancestor == path else f"lies under {ancestor}, a file"
                    self.fail(f"{text}: {where}, not a Zarr store folder; {_store_advice(ctx)}", param, ctx)
                break
        return text


#: the commands that may make a new store at --store (ingest; a job or study given --source): every other one
#: only uses a store that ingest made
CREATING_COMMANDS = frozenset({"ingest", "run", "submit", "study"})


def _store_advice(ctx: click.Context | None) -> str:
    """What to give instead of a file: a folder for a new store, or the store that ingest made."""
    if ctx is None or ctx.command.name in CREATING_COMMANDS:
        return "choose a new or empty folder"
    return USE_A_STORE_MADE_BY_INGEST


class LocalFolder(click.Path):
    """A folder on this machine's disk (a run or study folder): ``~`` and ``file://`` as for a store, by
    :func:`~mnist_dask.locations.local_path`; a remote URL, or a folder in a Zarr store, is refused."""

    def __init__(self, exists: bool = False) -> None:
        super().__init__(exists=exists, file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The folder as a Path (``~`` expanded), once click's checks pass."""
        text = str(value)
        path = local_path(text)
        if path is None:
            self.fail(f"{text}: a folder on this machine is needed here, not a URL", param, ctx)
        from mnist_dask.data.layout import store_around

        store = store_around(path)
        if store is not None:
            where = "is a Zarr store" if store == path.absolute() else f"lies inside the Zarr store {store}"
            self.fail(f"{text}: {where}; choose a folder outside any store", param, ctx)
        return super().convert(path, param, ctx)


class SourceText(click.ParamType):
    """``openml``, ``idx[:DIR_OR_URL]`` or ``csv:TRAIN,TEST``, parsed into a Source."""

    name = "source"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The parsed Source."""
        if not isinstance(value, str):
            return value
        from mnist_dask.data.sources import parse_source

        try:
            return parse_source(value)
        except UserError as exc:
            self.fail(str(exc), param, ctx)


class Seconds(click.FloatRange):
    """A finite, positive number of seconds."""

    name = "seconds"

    def __init__(self) -> None:
        """Positive: more than 0."""
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, refusing nan and inf (which FloatRange lets through)."""
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value} is not a finite number of seconds", param, ctx)
        return seconds


def _process_local(url: str) -> str | None:
    """Why a store URL that lives in one process's memory cannot be used (the workers are other processes,
    and nothing outlives the command), or None."""
    if url.split("://", 1)[0].lower() != "memory":
        return None
    return (
        "an in-memory filesystem lives in one process: the Dask workers (other processes) would never see it, "
        "and it is gone when the command ends; use a folder path or a shared URL (s3://...)"
    )


def _unusable_protocol(url: str) -> str | None:
    """Why fsspec cannot open ``url`` here (unknown protocol, backend not installed), or None."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return f"unknown protocol {protocol!r} (fsspec knows e.g. s3, gs, az, http)"
    except ImportError as exc:
        return f"the {protocol}:// backend is not installed ({str(exc).strip().splitlines()[0]})"
    return None
