"""Transform stages: derived datasets computed chunk by chunk on the cluster and stored as Zarr.

Each transform reads a dataset (``raw`` or an earlier ``derived/<name>``) and writes
``derived/<name>/{train,test}/...``. A chain is named by its steps, e.g.
``derived/deskew+shift5x``. This module names the transforms and runs one as a resumable
stage; their lazy arrays are built in :mod:`~mnist_dask.transforms.per_image`,
:mod:`~mnist_dask.transforms.expansions` and :mod:`~mnist_dask.transforms.fitted`, over the
numpy kernels of :mod:`~mnist_dask.transforms.kernels`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from distributed import Client

from mnist_dask.data.stages import produce_stage
from mnist_dask.data.store import STAGE_NAME, Store
from mnist_dask.errors import UserError
from mnist_dask.transforms.arrays import FEATURES, IMAGES, Arrays, RowCounts, same_rows
from mnist_dask.transforms.expansions import (
    augment_name,
    augment_rows,
    build_augment,
    build_rotate,
    build_shift,
    rotate_rows,
    shift_name,
    shift_rows,
)
from mnist_dask.transforms.fitted import build_mean, build_pca, build_scale, build_variance_threshold, pca_name
from mnist_dask.transforms.names import marks, number
from mnist_dask.transforms.parameters import DEFAULTS
from mnist_dask.transforms.per_image import BLUR, DESKEW, build_downscale, build_sample, downscale_name, sample_rows
from mnist_dask.transforms.validation import resolve_params


@dataclass(frozen=True)
class Transform:
    """A named transform: its default parameters, output name and lazy array builder, and what a query image needs.

    Its summary, ``defaults`` and parameters' ranges and choices are in :mod:`~mnist_dask.transforms.parameters`
    (``SUMMARIES``, ``DEFAULTS``, ``PARAMETERS``), by its name: the command line reads them there without
    loading dask. ``needs``
    is what its input dataset must hold (images or features) and ``gives`` what its output
    holds (None: not a dataset, e.g. ``mean``), so a chain that cannot work is refused up front.
    Every parameter that changes the output is in the stage name (by ``output_name``, or as a mark of
    :func:`~mnist_dask.transforms.names.marks`), so two variants never share a name; ``chunk_size`` is not
    (it changes how the output is chunked).

    A user's image classified with a model trained on this transform's output (:mod:`mnist_dask.jobs.classify`)
    is given the same ``query`` (a per-image transform's kernel, with the stage's parameters), or nothing when
    the transform is ``rows_only`` (it only adds or chooses training rows); any other transform is refused there.
    """

    name: str
    output_name: Callable[[dict[str, Any]], str]
    build: Callable[[Store, str, dict[str, Any]], Arrays]
    needs: frozenset[str] = frozenset({IMAGES})
    gives: str | None = IMAGES
    marked: tuple[str, ...] = ()  # parameters output_name leaves out: marked in the name when not at their default
    marked_on_copies: dict[str, Any] = field(default_factory=dict)  # ... that matter only on an input with
    # augmented copies: marked there when not at this value (pca's fit_on: unmarked 'originals', as knn_best)
    query: Callable[[np.ndarray, dict[str, Any]], np.ndarray] | None = None  # (images, params): one query's step
    rows_only: bool = False  # only adds or chooses training rows: a query image stays as it is
    rows: Callable[[dict[str, Any], RowCounts], RowCounts] = same_rows  # (params, the input's rows per split): the
    # output's, known before it runs (a job's parameters are checked against them up front)

    @property
    def defaults(self) -> dict[str, Any]:
        """Its parameters and their default values (:data:`~mnist_dask.transforms.parameters.DEFAULTS`)."""
        return DEFAULTS[self.name]


@dataclass(frozen=True)
class StageOutcome:
    """What a transform did (``written`` or ``skipped``) and where its result is."""

    action: str
    stage: str


def run_transform(
    store: Store,
    client: Client,
    name: str,
    params: dict[str, Any] | None = None,
    input_stage: str = "raw",
    force: bool = False,
    transform_command: bool = False,
) -> StageOutcome:
    """Run one transform as a stage: skip if complete with the same inputs and parameters.

    ``transform_command``: the caller is ``mnist-dask transform`` (whose --force a refusal may advise), not
    a job."""
    transform = TRANSFORMS.get(name)
    if transform is None:
        raise UserError(f"transform {name!r}: unknown; choose from {', '.join(sorted(TRANSFORMS))}")
    params = resolve_params(transform, params or {})
    if not STAGE_NAME.match(input_stage) or ".." in input_stage:
        raise UserError(f"--input {input_stage}: not a dataset stage; use raw or derived/<name>")
    input_attrs = store.stage_attrs(input_stage)
    if not input_attrs or not input_attrs.get("complete"):
        raise UserError(_missing_input(store, input_stage, input_attrs is not None))
    _check_input(store, transform, input_stage)
    stage = output_stage(name, params, input_stage, store.has(f"{input_stage}/train/copy"))
    fingerprint = {
        "transform": name,
        "params": params,
        "input": input_stage,
        "input_fingerprint": input_attrs.get("fingerprint"),
    }

    def conflict() -> None:
        stored = (store.stage_attrs(stage) or {}).get("fingerprint")
        raise UserError(_conflict_message(store, stage, stored, fingerprint, transform_command))

    def build() -> tuple[Arrays, dict[str, Any]]:
        return transform.build(store, input_stage, params), {"transform": name, "params": params, "input": input_stage}

    return StageOutcome(produce_stage(store, client, stage, fingerprint, force, build, conflict), stage)


def _conflict_message(
    store: Store, stage: str, stored: object, fingerprint: dict[str, Any], transform_command: bool
) -> str:
    """Why a complete stage of this name is not this run's, saying what differs in its recorded fingerprint
    (only the chunk size, other parameters, a rewritten input), and the remedy of the caller's command.

    ``transform_command``: ``mnist-dask transform`` has --chunk-size and --force; a job can only drop the stage."""
    differs = _differences(stored, json.loads(json.dumps(fingerprint)))  # as recorded: tuples become lists, ...
    said = " and ".join(differs) or "with other parameters or inputs"
    what = f"{store}: '{stage}' exists{',' if said.startswith('computed') else ''} {said}"
    if not transform_command:
        return f"{what}; {drop_advice(store, stage)}"
    if len(differs) == 1 and isinstance(stored, dict) and differs[0].startswith("with chunks of"):
        return f"{what}; pass --chunk-size {stored['params']['chunk_size']} to use it, or --force to replace it"
    return f"{what}; use --force to replace it"


def _differences(stored: object, wanted: dict[str, Any]) -> list[str]:
    """What differs between a stage's recorded fingerprint and the one asked for, in words; empty when the
    record cannot tell (written by an older version, or without one)."""
    if not isinstance(stored, dict) or not isinstance(stored.get("params"), dict):
        return []
    old, new = stored["params"], wanted["params"]
    keys = [key for key in new if key != "chunk_size"] + sorted(key for key in old if key not in new)
    differs = []
    if old.get("chunk_size") != new.get("chunk_size"):
        differs.append(f"with chunks of {old.get('chunk_size')} rows (asked for {new.get('chunk_size')})")
    changed = [f"{key}={old.get(key)!r} (asked for {new.get(key)!r})" for key in keys if old.get(key) != new.get(key)]
    if changed:
        differs.append(f"with other parameters: {', '.join(changed)}")
    if any(stored.get(key) != wanted[key] for key in ("input", "input_fingerprint")):
        differs.append(f"computed from an earlier '{wanted['input']}' (rewritten since)")
    return differs


def _missing_input(store: Store, input_stage: str, begun: bool) -> str:
    """Why the input stage cannot be read, and the command that makes it: ``ingest`` for raw."""
    state = "is incomplete (its writing was interrupted, or is under way)" if begun else "is missing"
    if input_stage == "raw":
        ingest = f"mnist-dask ingest --store {shlex.quote(str(store))}"
        return f"{store}: no MNIST here yet (stage raw {state}); run '{ingest}' first"
    return f"{store}: input stage '{input_stage}' {state}; compute it first with 'mnist-dask transform'"


def drop_advice(store: Store, stage: str) -> str:
    """How to have a job compute ``stage`` again: the ``drop`` command that deletes it (and its dependents)."""
    dependents = " --dependents" if store.dependents(stage) else ""
    return f"drop it to compute it again: mnist-dask drop --store {shlex.quote(str(store))} {stage}{dependents}"


def chain_problem(names: list[str]) -> str | None:
    """Why a chain of transforms applied to raw (in order) cannot run, or None if it can.

    A step must get what it needs (images, or features too) from the one before, and the
    chain must end in a dataset: ``mean`` writes mean images, no train/test split.
    """
    kind: str | None = IMAGES  # raw holds images
    previous = "raw"
    for i, name in enumerate(names):
        needs = TRANSFORMS[name].needs
        if kind is None:
            return f"steps[{i}] ({name}) cannot follow {previous}: {previous} writes no dataset (no train/test split)"
        if kind not in needs:
            return (
                f"steps[{i}] ({name}) needs images, but {previous} (steps[{i - 1}]) gives {kind}; "
                f"put {name} before {previous}"
            )
        kind = TRANSFORMS[name].gives
        previous = name
    if kind is None:
        return f"the last step ({previous}) writes no dataset (no train/test split) to classify; remove it"
    return None


def _check_input(store: Store, transform: Transform, input_stage: str) -> None:
    """Refuse an input stage that is not a dataset, or holds features where the transform needs images."""
    if store.has(f"{input_stage}/train/images"):
        kind = IMAGES
    elif store.has(f"{input_stage}/train/features"):
        kind = FEATURES
    else:
        raise UserError(
            f"--input {input_stage}: not a dataset (it has no train/test split); "
            "use raw or a derived stage of images or features"
        )
    if kind not in transform.needs:
        raise UserError(
            f"transform {transform.name}: needs images, but --input {input_stage} holds features "
            f"(from pca, scale or varthresh); apply {transform.name} before that step"
        )


def output_stage(name: str, params: dict[str, Any], input_stage: str, input_copies: bool = False) -> str:
    """``derived/<step>`` for a transform of raw, ``derived/<input>+<step>`` for a chain.

    ``params``: all of them (defaults filled in); ``input_copies``: whether the input holds augmented copies.
    """
    transform = TRANSFORMS[name]
    unmarked = {key: transform.defaults[key] for key in transform.marked}
    step = transform.output_name(params) + marks(
        params, unmarked | (transform.marked_on_copies if input_copies else {})
    )
    return f"derived/{step}" if input_stage == "raw" else f"{input_stage}+{step}"


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform(
            "shift",
            shift_name,
            build_shift,
            marked=("seed",),
            rows_only=True,
            rows=shift_rows,
        ),
        Transform("downscale", downscale_name, build_downscale),
        Transform("deskew", lambda p: "deskew", DESKEW.build, query=DESKEW.apply),
        Transform(
            "blur",
            lambda p: f"blur{number(p['sigma'])}",
            BLUR.build,
            query=BLUR.apply,
        ),
        Transform("scale", lambda p: "scaled", build_scale, gives=FEATURES),
        Transform(
            "varthresh",
            lambda p: f"varthresh{number(p['threshold'])}",
            build_variance_threshold,
            gives=FEATURES,
        ),
        Transform("mean", lambda p: "mean", build_mean, gives=None),
        Transform(
            "augment",
            augment_name,
            build_augment,
            rows_only=True,
            rows=augment_rows,
        ),
        Transform(
            "rotate",
            lambda p: f"rot{number(p['degrees'])}x3",
            build_rotate,
            rows_only=True,
            rows=rotate_rows,
        ),
        Transform(
            "sample",
            lambda p: f"sample{p['train']}-{p['test']}",
            build_sample,
            marked=("seed",),
            rows_only=True,
            rows=sample_rows,
        ),
        Transform(
            "pca",
            pca_name,
            build_pca,
            needs=frozenset({IMAGES, FEATURES}),
            gives=FEATURES,
            marked=("svd_solver", "seed"),
            marked_on_copies={"fit_on": "originals"},
        ),
    )
}
