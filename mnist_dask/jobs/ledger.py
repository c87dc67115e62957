"""The figure ledger: each published figure of a job beside ours, marked exact, within print precision, or differs.

A job's ``[expect]`` table holds the figures as the notebook printed them (a number, a list,
a matrix, a dict, or the printed text itself, e.g. a classification report); its ``[differs]``
table holds the reason for every figure known to differ. A figure is found in the result by
its key: a path into ``metrics`` (dots between levels, list items by index), else into the
whole result (``search.best_score``).

* ``exact``: equal to the last bit (numbers) or character (text);
* ``within print precision``: equal to the digits printed: ``|ours - published|`` is at most
  half a unit of the last printed digit (plus a few float ulps, for sums taken in another order);
* ``differs``: anything else, with the job's reason, or "unexplained" (a bug to find);
* ``missing``: the job did not compute it (a bug).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

Status = Literal["exact", "within print precision", "differs", "missing"]
STATUSES: tuple[Status, ...] = ("exact", "within print precision", "differs", "missing")
MET: tuple[Status, ...] = ("exact", "within print precision")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_ULPS = 8 * 2.0**-52


class PrintedFloat(float):
    """A published number that keeps the digits its job file printed: ``0.9700`` is 0.97 with four decimals."""

    text: str

    def __new__(cls, text: str) -> PrintedFloat:
        number = super().__new__(cls, text)
        number.text = text.replace("_", "")
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (PrintedFloat, (self.text,))


def ledger(expect: dict[str, Any], differs: dict[str, str], result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {published, measured, status, reason?}}`` for every figure of ``expect``."""
    entries = {}
    for key, published in expect.items():
        measured = lookup(result, key)
        status = compare(published, measured)
        entry: dict[str, Any] = {"published": as_printed(published), "measured": measured, "status": status}
        if status == "differs":
            entry["reason"] = differs.get(key, "unexplained")
        entries[key] = entry
    return entries


def scored(expect: dict[str, Any], differs: dict[str, str], result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with its ``expected`` ledger and its ``ledger`` counts for ``expect`` and ``differs`` as given
    (neither without ``expect``), before its ``timings_s``: what a run's result.json holds for its job file."""
    rest = {key: value for key, value in result.items() if key not in ("expected", "ledger", "timings_s")}
    if expect:
        rest["expected"] = ledger(expect, differs, dict(rest))  # the figures of what the run computed alone
        rest["ledger"] = counts(rest["expected"])
    return {**rest, **({"timings_s": result["timings_s"]} if "timings_s" in result else {})}


def lookup(result: dict[str, Any], key: str) -> Any:
    """The value at ``key`` (a dotted path) in the result's metrics, else in the whole result; None if absent."""
    for root in (result.get("metrics"), result):
        value = _walk(root, key.split("."))
        if value is not None:
            return value
    return None


def compare(published: Any, measured: Any) -> Status:
    """How ``measured`` stands against the ``published`` figure (see the module docstring)."""
    if measured is None:
        return "missing"
    if isinstance(published, str) and isinstance(measured, str):
        return _compare_text(published, measured)
    if isinstance(published, bool) or isinstance(measured, bool):
        return "exact" if type(published) is type(measured) and published == measured else "differs"
    if isinstance(published, (int, float)) and isinstance(measured, (int, float)):
        return _compare_number(_printed(published), measured)
    if isinstance(published, str) and isinstance(measured, (int, float)) and _NUMBER.match(published.strip()):
        return _compare_number(published.strip(), measured)
    if isinstance(published, list) and isinstance(measured, (list, tuple)):
        if len(published) != len(measured):
            return "differs"
        return _worst(compare(p, m) for p, m in zip(published, measured))
    if isinstance(published, dict) and isinstance(measured, dict):
        if set(published) != set(measured):
            return "differs"
        return _worst(compare(published[k], measured[k]) for k in published)
    return "exact" if published == measured else "differs"


def as_printed(published: Any) -> Any:
    """The figure for records: a number whose printed digits its float would lose (0.9700) as that text."""
    if isinstance(published, PrintedFloat):
        return float(published) if repr(float(published)) == published.text else published.text
    if isinstance(published, list):
        return [as_printed(item) for item in published]
    if isinstance(published, dict):
        return {key: as_printed(value) for key, value in published.items()}
    return published


def counts(entries: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many figures have each status."""
    return {status: sum(1 for e in entries.values() if e["status"] == status) for status in STATUSES}


def reproduced(status_counts: dict[str, int]) -> int:
    """How many figures of :func:`counts` are as published (exact or within print precision)."""
    return sum(status_counts.get(status, 0) for status in MET)


def _compare_number(printed: str, measured: float) -> Status:
    """A number against its printed text: exact, or equal to the printed digits."""
    published = float(printed)
    if not math.isfinite(measured):
        return "exact" if measured == published else "differs"
    if measured == published:
        return "exact"
    mantissa = printed.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(printed.lower().split("e")[1]) if "e" in printed.lower() else 0
    half_unit = 0.5 * 10.0 ** (exponent - decimals)
    tolerance = half_unit + _ULPS * max(abs(published), abs(measured))
    return "within print precision" if abs(measured - published) <= tolerance else "differs"


def _printed(number: float) -> str:
    """The digits a published number was printed with (a float read from plain TOML keeps them as PrintedFloat)."""
    if isinstance(number, PrintedFloat):
        return number.text
    return repr(number) if isinstance(number, float) else str(number)


def _compare_text(published: str, measured: str) -> Status:
    """Printed text (a classification report): words equal, numbers equal to their printed digits (any spacing)."""
    if published == measured:
        return "exact"
    ours, theirs = measured.split(), published.split()
    if len(ours) != len(theirs):
        return "differs"
    statuses: list[Status] = []
    for p, m in zip(theirs, ours):
        if _NUMBER.match(p) and _NUMBER.match(m):
            statuses.append(_compare_number(p, float(m)))
        else:
            statuses.append("exact" if p == m else "differs")
    return _worst(statuses)


def _worst(statuses: Any) -> Status:
    """The least favourable status of several (exact < within print precision < differs < missing)."""
    found = list(statuses)
    return max(found, key=STATUSES.index) if found else "exact"


def _walk(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
