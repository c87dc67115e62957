"""Job files: TOML naming one experiment and its typed ``[params]``, the published figures in ``[expect]``,
and in ``[differs]`` the reason for each published figure known to differ from ours.

Every mistake (unknown key, wrong type, value out of range, unknown experiment or
transform) is a one-line :class:`UserError` naming the job file and the key, before any
work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

from mnist_dask.errors import UserError, unreadable
from mnist_dask.jobs.ledger import PrintedFloat

if TYPE_CHECKING:
    from pydantic import ValidationError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_LEVEL = ("name", "description", "experiment", "params", "expect", "differs")


@dataclass(frozen=True)
class Job:
    """A validated job: which experiment runs, with which parameters, and the figures it should reproduce."""

    name: str
    path: str
    experiment: str
    params: Any  # the experiment's parameter dataclass
    description: str = ""
    expect: dict[str, Any] = field(default_factory=dict)  # published figures, as printed
    differs: dict[str, str] = field(default_factory=dict)  # why a published figure is known to differ
    fingerprint: str = ""  # SHA-256 of what the job computes: the parsed job less [expect] and [differs]

    def params_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-ready values (for result.json)."""
        from mnist_dask.experiments.params import as_dict

        return as_dict(self.params)


def load_job(path: str | Path) -> Job:
    """Read and validate a job file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8)") from None
    except OSError as exc:
        raise unreadable(path, exc, "job file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    if isinstance(data.get("expect"), dict):  # published numbers keep their printed digits (0.9700: four decimals)
        data["expect"] = tomllib.loads(text, parse_float=PrintedFloat)["expect"]
    return parse_job(data, str(path))


def parse_job(data: dict[str, Any], path: str) -> Job:
    """Validate a job's parsed TOML; ``path`` names the file in error messages."""
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(_TOP_LEVEL)}")
    name = _typed(data, "name", str, Path(path).stem, path)
    if not _NAME.match(name):
        raise UserError(f"{path}: name {name!r} must be letters, digits, '_', '-' or '.' (it names the run folder)")
    # heavy: imported when the work starts (the experiments' modules load dask; the checks above need none of it)
    from pydantic import ValidationError

    from mnist_dask.experiments import EXPERIMENTS

    experiment = _typed(data, "experiment", str, None, path)
    if experiment is None:
        raise UserError(f"{path}: needs experiment = NAME; choose from {', '.join(sorted(EXPERIMENTS))}")
    if experiment not in EXPERIMENTS:
        raise UserError(f"{path}: unknown experiment {experiment!r}; choose from {', '.join(sorted(EXPERIMENTS))}")
    params_class = EXPERIMENTS[experiment].params
    try:
        params = params_class(**_typed(data, "params", dict, {}, path))
    except ValidationError as exc:
        raise UserError(f"{path}: {_describe(exc, params_class)}") from None
    expect, differs = _typed(data, "expect", dict, {}, path), _typed(data, "differs", dict, {}, path)
    for key, reason in differs.items():
        if key not in expect:
            raise UserError(f"{path}: differs.{key} explains a figure that [expect] does not list")
        if not isinstance(reason, str) or not reason.strip():
            raise UserError(f"{path}: differs.{key} must be a sentence saying why the figure differs")
    description = _typed(data, "description", str, "", path)
    # the published figures and their notes only change the ledger, never what runs
    computed = {key: value for key, value in data.items() if key not in ("expect", "differs")}
    fingerprint = hashlib.sha256(json.dumps(computed, sort_keys=True, default=str).encode()).hexdigest()
    return Job(name, path, experiment, params, description, expect, differs, fingerprint)


def _typed(data: dict[str, Any], key: str, kind: type, default: Any, path: str) -> Any:
    """A top-level value of the expected type, or the default when absent."""
    if key not in data:
        return default
    value = data[key]
    if not isinstance(value, kind):
        raise UserError(
            f"{path}: {key} must be a {_KIND_NAMES.get(kind, kind.__name__)}, got {type(value).__name__} {value!r}"
        )
    return value


def _describe(error: ValidationError, params_class: type) -> str:
    """The first validation problem in one line: ``params.<key>: <problem> (got <value>)``."""
    first = error.errors()[0]
    loc = [part for part in first["loc"] if part not in _TYPE_TAGS]
    where = "params" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = _field_names(params_class, loc[:-1])
        return f"unknown key {where}; allowed: {', '.join(allowed) or 'none'}"
    if first["type"] == "missing" or first["type"] == "missing_argument":
        return f"{where} is required"
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"{where}: {message}{got}"


def _field_names(cls: Any, loc: list[Any]) -> list[str]:
    """The keys a parameter table at ``loc`` (a path of field names) accepts."""
    for part in loc:
        if not is_dataclass(cls) or not isinstance(part, str):
            return []
        hint = get_type_hints(cls).get(part)
        cls = next((arg for arg in (hint, *get_args(hint)) if is_dataclass(arg)), None)
    return [f.name for f in fields(cls)] if is_dataclass(cls) else []


_KIND_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "table"}
_TYPE_TAGS = ("int", "str", "float", "bool", "list[...]", "function-after[_transform_step(), dict[str,any]]")
