"""Typed experiment parameters: the vocabulary of field types, and the decorator that makes a parameter class.

An experiment's parameters are a frozen dataclass validated by pydantic: unknown keys,
wrong types (no silent ``"5"`` -> 5 or ``true`` -> 1) and out-of-range values are refused
with the path of the offending key, which :mod:`mnist_dask.jobs.spec` turns into one line
naming the job file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, cast, dataclass_transform

from pydantic import ConfigDict, Field, Strict, TypeAdapter
from pydantic.dataclasses import dataclass

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is accepted too (TOML's 1 for 1.0)
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]  # a row count; 0 means "all"
Positive = Annotated[int, Strict(), Field(ge=1)]
Seed = Annotated[int, Strict(), Field(ge=0)]
Weights = Literal["uniform", "distance"]

T = TypeVar("T")
Options = Annotated[list[T], Field(min_length=1)]  # the values a search tries: at least one
_CONFIG = ConfigDict(extra="forbid")


@dataclass_transform(frozen_default=True, field_specifiers=(Field,))
def parameters(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, validated parameter dataclass (unknown keys refused)."""
    return cast(type[T], dataclass(frozen=True, config=_CONFIG)(cls))


def as_dict(params: Any) -> dict[str, Any]:
    """Parameters (nested tables included) as plain JSON-ready values."""
    return cast(dict[str, Any], TypeAdapter(type(params)).dump_python(params, mode="json"))


def default_list(*values: Any) -> Any:
    """A list-valued field's default (each instance gets its own copy)."""
    return Field(default_factory=lambda: list(values))


def nested(factory: Callable[[], Any]) -> Any:
    """A nested parameter table's default."""
    return Field(default_factory=factory)


@parameters
class TrainSample:
    """The first ``sample`` training rows (0: all) and the seed of the experiment's models."""

    sample: Count = 0
    random_state: Seed = 42


@parameters
class RowSamples:
    """The first ``sample`` training and ``test_sample`` test rows (0: all): a quick run on a sample."""

    sample: Count = 0
    test_sample: Count = 0
