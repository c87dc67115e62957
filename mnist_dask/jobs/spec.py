"""Job files: TOML descriptions of one experiment, parsed and validated strictly.

Every mistake (unknown key, wrong type, unknown transform or parameter) is a one-line
:class:`UserError` naming the job file, before any work starts.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_dask.errors import UserError

WEIGHTS = ("uniform", "distance")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Step:
    """One transform of the job's dataset chain, e.g. ``shift`` with ``radius = 1``."""

    transform: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Search:
    """A k-NN grid search by cross-validation, on raw data or on the job's dataset."""

    param_grid: dict[str, list[Any]]
    cv: int = 5
    on: str = "raw"  # "raw" | "dataset"


@dataclass(frozen=True)
class Job:
    """A validated job: a k-NN study (dataset chain, optional search, model, sweep) or a named experiment."""

    name: str
    path: str
    description: str = ""
    experiment: str | None = None  # set for experiment jobs: a key of mnist_dask.experiments.EXPERIMENTS
    params: dict[str, Any] = field(default_factory=dict)  # the experiment's parameters
    steps: tuple[Step, ...] = ()
    search: Search | None = None
    model: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    expect: dict[str, Any] = field(default_factory=dict)


def load_job(path: str | Path) -> Job:
    """Read and validate a job file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such job file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return parse_job(data, str(path))


def parse_job(data: dict[str, Any], path: str) -> Job:
    """Validate a job's parsed TOML; ``path`` names the file in error messages."""
    check = _Checker(path)
    name = check.typed(data, "name", str, Path(path).stem)
    if not _NAME.match(name):
        raise UserError(f"{path}: name {name!r} must be letters, digits, '_', '-' or '.' (it names the run folder)")
    if "experiment" in data:
        return _parse_experiment(data, path, name, check)
    check.keys(data, "", {"name", "description", "dataset", "search", "model", "sweep", "expect"})
    dataset = check.table(data, "dataset")
    check.keys(dataset, "dataset", {"steps"})
    steps = tuple(check.step(s, i) for i, s in enumerate(check.typed(dataset, "steps", list, [], "dataset")))

    search = None
    if "search" in data:
        table = check.table(data, "search")
        check.keys(table, "search", {"param_grid", "cv", "on"})
        grid = check.typed(table, "param_grid", dict, None, "search")
        if grid is None:
            raise UserError(f"{path}: [search] needs param_grid")
        check.keys(grid, "search.param_grid", {"n_neighbors", "weights"})
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{path}: search.param_grid.{key} must be a non-empty list")
            for value in values:
                check.model_value(key, value, f"search.param_grid.{key}")
        cv = check.typed(table, "cv", int, 5, "search")
        if cv < 2:
            raise UserError(f"{path}: search.cv must be at least 2, got {cv}")
        on = check.typed(table, "on", str, "raw", "search")
        if on not in ("raw", "dataset"):
            raise UserError(f"{path}: search.on must be 'raw' or 'dataset', got {on!r}")
        search = Search(grid, cv, on)

    model = check.table(data, "model")
    check.keys(model, "model", {"n_neighbors", "weights"})
    for key, value in model.items():
        check.model_value(key, value, f"model.{key}")
    if search is None:
        model = {"n_neighbors": 5, "weights": "uniform", **model}

    sweep = None
    if "sweep" in data:
        sweep = check.table(data, "sweep")
        check.keys(sweep, "sweep", {"n_neighbors", "weights"})
        ks = check.typed(sweep, "n_neighbors", list, None, "sweep")
        if not ks:
            raise UserError(f"{path}: [sweep] needs a non-empty n_neighbors list")
        for k in ks:
            check.model_value("n_neighbors", k, "sweep.n_neighbors")
        check.model_value("weights", sweep.setdefault("weights", "uniform"), "sweep.weights")

    expect = check.table(data, "expect")
    return Job(name=name, path=path, description=check.typed(data, "description", str, ""),
               steps=steps, search=search, model=model, sweep=sweep, expect=expect)


def _parse_experiment(data: dict[str, Any], path: str, name: str, check: _Checker) -> Job:
    """An experiment job: ``experiment = "<name>"`` and its ``[params]``, checked against its defaults."""
    from mnist_dask.experiments import EXPERIMENTS

    check.keys(data, "", {"name", "description", "experiment", "params", "expect"})
    experiment = check.typed(data, "experiment", str, "")
    if experiment not in EXPERIMENTS:
        raise UserError(f"{path}: unknown experiment {experiment!r}; choose from {', '.join(sorted(EXPERIMENTS))}")
    defaults = EXPERIMENTS[experiment].defaults
    params = check.table(data, "params")
    check.keys(params, "params", set(defaults))
    for key, value in params.items():
        kind = type(defaults[key])
        if defaults[key] is not None and not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
            raise UserError(f"{path}: params.{key} must be a {_kind_name(kind)}, got {type(value).__name__} {value!r}")
    return Job(name=name, path=path, description=check.typed(data, "description", str, ""),
               experiment=experiment, params={**defaults, **params}, expect=check.table(data, "expect"))


class _Checker:
    """Small validators that raise one-line errors naming the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def keys(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                place = f"[{where}] " if where else ""
                raise UserError(f"{self.path}: unknown key {place}{key!r}; allowed: {', '.join(sorted(allowed))}")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        return dict(self.typed(data, key, dict, {}))

    def typed(self, table: dict[str, Any], key: str, kind: type, default: Any, where: str = "") -> Any:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            place = f"{where}.{key}" if where else key
            raise UserError(f"{self.path}: {place} must be a {_kind_name(kind)}, got {type(value).__name__} {value!r}")
        return value

    def model_value(self, key: str, value: Any, where: str) -> None:
        if key == "n_neighbors" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"{self.path}: {where} must be a positive integer, got {value!r}")
        if key == "weights" and value not in WEIGHTS:
            raise UserError(f"{self.path}: {where} must be 'uniform' or 'distance', got {value!r}")

    def step(self, entry: Any, index: int) -> Step:
        from mnist_dask.transforms.registry import TRANSFORMS, resolve_params

        if not isinstance(entry, dict) or not isinstance(entry.get("transform"), str):
            raise UserError(f"{self.path}: dataset.steps[{index}] must be a table with a 'transform' name")
        params = {k: v for k, v in entry.items() if k != "transform"}
        transform = TRANSFORMS.get(entry["transform"])
        if transform is None:
            raise UserError(f"{self.path}: dataset.steps[{index}]: unknown transform {entry['transform']!r}; "
                            f"choose from {', '.join(sorted(TRANSFORMS))}")
        try:
            return Step(transform.name, resolve_params(transform, params))
        except UserError as exc:
            raise UserError(f"{self.path}: dataset.steps[{index}]: {exc}") from None


def _kind_name(kind: type) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
            dict: "table"}.get(kind, kind.__name__)
