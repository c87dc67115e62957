"""Results that several experiments need, computed once and shared through the store.

A cached result is a stage ``cache/<name>-<fingerprint hash>`` written like any other stage
(cluster-wide lock, chunk checksums, marked complete last), so the second job that needs
it reads it back instead of computing it again (e.g. the scaled SGD's cross-validated
decisions, which both ``multiclass`` and ``error_analysis`` report).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from mnist_dask.data.stages import produce_stage
from mnist_dask.experiments import Context


@dataclass(frozen=True)
class Cached:
    """One shareable result: its stage in the store and everything it depends on."""

    stage: str
    key: dict[str, Any]

    @classmethod
    def of(cls, ctx: Context, name: str, **what: Any) -> Cached:
        """The cache entry of the described computation on the store's raw inputs."""
        key = {**what, "inputs": (ctx.store.stage_attrs("raw") or {}).get("fingerprint")}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return cls(f"cache/{name}-{digest}", key)

    def load(self, ctx: Context, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """The cached arrays, when the stage is complete with this fingerprint; else None."""
        if not ctx.store.is_complete(self.stage, self.key):
            return None
        return {name: np.asarray(ctx.store.read(f"{self.stage}/{name}").compute()) for name in names}

    def save(self, ctx: Context, arrays: dict[str, np.ndarray]) -> None:
        """Store computed arrays as the complete cache stage (a no-op when another job got there first)."""

        def build() -> tuple[dict[str, da.Array], dict[str, Any]]:
            return {name: da.from_array(value) for name, value in arrays.items()}, {"cached": self.stage}

        produce_stage(ctx.store, ctx.client, self.stage, self.key, False, build, on_conflict=lambda: None)
