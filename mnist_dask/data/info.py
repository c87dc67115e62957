"""Describe what a store holds: stages with completion and provenance, arrays with shapes and chunks."""

from __future__ import annotations

from typing import Any

import zarr

from mnist_dask.data.store import ATTRS_KEY, Store

INCOMPLETE_WHY = "being written now, or its writing was interrupted"


def describe(store: Store) -> dict[str, Any]:
    """A JSON-ready description of every stage and array in ``store``."""
    stages, arrays = {}, {}
    for path, node in store.walk():
        if isinstance(node, zarr.Array):
            arrays[path] = {
                "shape": list(node.shape),
                "dtype": str(node.dtype),
                "chunks": list(node.chunks),
                "compressors": [type(c).__name__ for c in node.compressors],
                "bytes_stored": node.nbytes_stored(),
            }
        elif ATTRS_KEY in node.attrs:
            stages[path] = dict(node.attrs[ATTRS_KEY])
    return {"store": store.url, "zarr_format": 3, "stages": stages, "arrays": arrays}


def format_description(description: dict[str, Any]) -> str:
    """Render :func:`describe`'s output as a short human-readable report."""
    lines = [f"{description['store']} (Zarr v{description['zarr_format']})"]
    if not description["stages"]:
        lines.append("  no stages")
    for stage, attrs in description["stages"].items():
        if not attrs.get("complete"):  # being written, or a write cut short: its arrays are partial
            lines.append(
                f"  stage {stage}: INCOMPLETE ({INCOMPLETE_WHY}; if no run is writing it, run it again or drop it)"
            )
            continue
        lines.append(f"  stage {stage}: complete")
        provenance = attrs.get("provenance", {})
        for key in ("source", "params", "completed_at", "package_version"):
            if key in provenance:
                lines.append(f"    {key}: {provenance[key]}")
        for name, md5 in provenance.get("input_md5", {}).items():
            lines.append(f"    input {name}: md5 {md5}")
        for path, meta in description["arrays"].items():
            if path.startswith(stage + "/"):
                lines.append(
                    f"    {path:32s} {tuple(meta['shape'])!s:18s} {meta['dtype']:8s} "
                    f"chunks {tuple(meta['chunks'])} {'+'.join(meta['compressors'])} "
                    f"{meta['bytes_stored'] / 1e6:.1f} MB"
                )
    return "\n".join(lines)
