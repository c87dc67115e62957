"""Experiments beyond the k-NN study: each a function run by an ``experiment = "<name>"`` job.

An experiment receives an :class:`~mnist_dask.jobs.driver.ExperimentContext` (store with ``raw``
ingested, Dask client, run folder, logger) and its parameters (the registered defaults
updated by the job's ``[params]``), and returns a dict merged into ``result.json``; its
figures go under ``"metrics"`` with plain snake_case names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its default parameters and the function that runs it."""

    name: str
    defaults: dict[str, Any]
    run: Callable[[Any, dict[str, Any]], dict[str, Any]]


EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, **defaults: Any) -> Callable[[Callable], Callable]:
    """Decorator adding an experiment function to :data:`EXPERIMENTS` under ``name``."""
    def add(function: Callable) -> Callable:
        EXPERIMENTS[name] = Experiment(name, defaults, function)
        return function
    return add


def _import_all() -> None:
    """Import every module of this package so each registers its experiments."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all()
