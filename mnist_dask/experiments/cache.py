"""Results that several experiments need, computed once and shared through the store.

A cached result is a stage ``cache/<name>-<fingerprint hash>`` written like any other stage
(cluster-wide lock, chunk checksums, marked complete last), so the second job that needs
it reads it back instead of computing it again (e.g. the scaled SGD's cross-validated
decisions, which both ``multiclass`` and ``error_analysis`` report).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dask.array as da
import numpy as np

from mnist_dask.data.stages import produce_stage
from mnist_dask.experiments import Context


def stage_name(name: str, fingerprint: dict[str, Any]) -> str:
    """The cache stage of a result: its name and a short hash of everything it depends on."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"cache/{name}-{digest}"


def fingerprint(ctx: Context, **what: Any) -> dict[str, Any]:
    """What a cached result depends on: the described computation and the store's raw inputs."""
    return {**what, "inputs": (ctx.store.stage_attrs("raw") or {}).get("fingerprint")}


def load(ctx: Context, stage: str, names: tuple[str, ...], key: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays, when the stage is complete with this fingerprint; else None."""
    if not ctx.store.is_complete(stage, key):
        return None
    return {name: np.asarray(ctx.store.read(f"{stage}/{name}").compute()) for name in names}


def save(ctx: Context, stage: str, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Store computed arrays as the complete cache stage (a no-op when another job got there first)."""

    def build() -> tuple[dict[str, da.Array], dict[str, Any]]:
        return {name: da.from_array(value) for name, value in arrays.items()}, {"cached": stage}

    produce_stage(ctx.store, ctx.client, stage, key, False, build, on_conflict=lambda: None)
