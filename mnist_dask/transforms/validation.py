"""A transform's parameter values: defaults filled in, each value's type and range checked against
:data:`~mnist_dask.transforms.parameters.PARAMETERS`, the table the command line's options use too."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_dask.errors import UserError
from mnist_dask.transforms.parameters import PARAMETERS, ParameterError

if TYPE_CHECKING:
    from mnist_dask.transforms.registry import Transform


def resolve_params(transform: Transform, params: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check each value's type and range, refusing unknown names.

    An integer parameter takes an integer (or its text), never a fraction (2.5 is not
    silently 2); a number takes an integer or a float; a flag takes true or false. A refused value is a
    :class:`ParameterError`, which the command line names by its option.
    """
    unknown = sorted(set(params) - set(transform.defaults))
    if unknown:
        raise UserError(
            f"transform {transform.name}: unknown parameter {unknown[0]!r}; "
            f"known: {', '.join(transform.defaults) or 'none'}"
        )
    resolved = dict(transform.defaults)
    for key, value in params.items():
        kind = type(transform.defaults[key])
        converted = _as_kind(value, kind)
        if converted is None:
            raise ParameterError(transform.name, key, f"={value!r} is not {_KIND_NAMES[kind]}")
        resolved[key] = converted
    for key, value in resolved.items():
        _check_range(transform.name, key, value)
    return resolved


def _check_range(name: str, key: str, value: Any) -> None:
    """The value within the range or choices of :data:`PARAMETERS`, the one table that the command
    line's options and job files' steps share."""
    param = PARAMETERS.get(name, {}).get(key)
    if param is None or isinstance(value, bool):
        return
    if param.choices and value not in param.choices:
        raise ParameterError(name, key, f" must be one of {', '.join(param.choices)}, got {value!r}")
    if not isinstance(value, (int, float)):
        return
    low = -math.inf if param.min is None else param.min
    high = math.inf if param.max is None else param.max
    finite = not isinstance(value, float) or math.isfinite(value)  # an integer is; isfinite overflows on huge ones
    if finite and low <= value <= high and not (param.min_open and value == low):
        return
    if param.max is not None:
        interval = f"{'(' if param.min_open else '['}{low:g}, {high:g}]"
        shown = f"{value:g}" if isinstance(value, float) else value
        raise ParameterError(name, key, f" must lie in {interval}, got {shown}")
    if isinstance(value, int):
        raise ParameterError(name, key, f" must be {low:g} or more, got {value}")
    bound = f" of at least {low:g}" if param.min is not None else ""
    raise ParameterError(name, key, f" must be a finite number{bound}, got {value}")


_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _as_kind(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (int, float, bool or str) when it is one, else None."""
    if isinstance(value, (bool, np.bool_)) or kind is bool:
        return bool(value) if isinstance(value, (bool, np.bool_)) and kind is bool else None
    if kind is int:
        if isinstance(value, (int, np.integer)):
            return int(value)
        return int(value) if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value) else None
    if kind is float:
        try:
            return float(value) if isinstance(value, (int, float, np.integer, np.floating, str)) else None
        except ValueError:
            return None
    return value if isinstance(value, kind) else None
