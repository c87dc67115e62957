"""Experiments: every job runs one, a function with typed parameters registered by name.

An experiment receives a :class:`Context` (the store with ``raw`` ingested, the Dask
client, its run folder, a logger and a stage timer) and its validated parameters, and
returns a dict merged into ``result.json``: its figures go under ``"metrics"``, and what its
report shows under ``"report"``, a list of displays made with :mod:`mnist_dask.report.spec`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from distributed import Client

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError

P = TypeVar("P")
Result = dict[str, Any]


@contextlib.contextmanager
def _untimed(name: str) -> Iterator[None]:
    yield


@dataclass(frozen=True)
class Context:
    """What an experiment works with: store, cluster, run folder, logger, and ``stage(name)`` to time a part."""

    store: Store
    client: Client
    run_dir: Path  # where it writes its files: the run's pending outputs, moved into the run folder once it finishes
    log: Callable[[str], None] = print
    stage: Callable[[str], AbstractContextManager[None]] = field(default=_untimed)


class ParamsError(UserError):
    """A job parameter the data cannot support, as ``params.<key> = <value>: <why>``; the job's driver adds the
    job file in front."""


@dataclass(frozen=True)
class Experiment(Generic[P]):
    """A registered experiment: its name, parameter class and the function that runs it.

    ``check``, if any, refuses parameters that raw's row counts (``{"train": n, "test": n}``) rule out, with a
    :class:`ParamsError`, before any cluster work (the run checks again what only the computed data can tell).
    """

    name: str
    params: type[P]
    run: Callable[[Context, P], Result]
    check: Callable[[P, dict[str, int]], None] | None = None

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.run.__doc__ or "").strip().splitlines()[0] if self.run.__doc__ else ""


EXPERIMENTS: dict[str, Experiment[Any]] = {}


def stage_rows(store: Store, stage: str) -> dict[str, int]:
    """The rows of each split of a dataset stage, ``{"train": n, "test": n}``, as a ``check`` takes them."""
    return {split: int(store.read(f"{stage}/{split}/labels").shape[0]) for split in ("train", "test")}


def experiment(
    name: str, params: type[P], check: Callable[[P, dict[str, int]], None] | None = None
) -> Callable[[Callable[[Context, P], Result]], Callable[[Context, P], Result]]:
    """Decorator registering ``function(ctx, params)`` as the experiment ``name`` with parameter class ``params``
    (and ``check``: see :class:`Experiment`)."""

    def add(function: Callable[[Context, P], Result]) -> Callable[[Context, P], Result]:
        EXPERIMENTS[name] = Experiment(name, params, function, check)
        return function

    return add


def _import_all() -> None:
    """Import every module of this package so each registers its experiments."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all()
