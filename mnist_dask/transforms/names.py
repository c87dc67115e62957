"""Pieces of stage names: numbers written short but exact, and the marks of parameters not at their defaults.

A stage's name must tell apart every two parameter sets that give different outputs, so variants can live
side by side in one store, while the names the shipped jobs use (all defaults, short numbers) stay as they are.
"""

from __future__ import annotations

from typing import Any


def number(value: float) -> str:
    """``value`` as ``:g`` writes it (1.0 -> "1", 0.25 -> "0.25") when that reads back exactly, else in full."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def marks(params: dict[str, Any], unmarked: dict[str, Any]) -> str:
    """``-<label><value>`` for each parameter of ``unmarked`` whose value is not the one given there.

    E.g. ``-seed7``, ``-randomized`` (svd_solver), ``-fitall`` (fit_on).
    """
    return "".join(
        f"-{_LABELS.get(key, key)}{_written(params[key])}" for key in unmarked if params[key] != unmarked[key]
    )


_LABELS = {"svd_solver": "", "fit_on": "fit"}  # how a parameter is written in a mark, where not by its name


def _written(value: Any) -> str:
    """A parameter value in a mark: floats by :func:`number`, the rest as they print."""
    return number(value) if isinstance(value, float) else str(value)
