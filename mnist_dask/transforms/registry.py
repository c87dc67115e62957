"""Transform stages: derived datasets computed chunk by chunk on the cluster and stored as Zarr.

Each transform reads a dataset (``raw`` or an earlier ``derived/<name>``) and writes
``derived/<name>/{train,test}/...``. A chain is named by its steps, e.g.
``derived/deskew+shift5x``. The numpy work lives in :mod:`mnist_dask.transforms.kernels`;
this module only maps it over dask chunks and runs it as a resumable stage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from distributed import Client

from mnist_dask.data.sources import SPLITS
from mnist_dask.data.stages import produce_stage
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.transforms import kernels
from mnist_dask.transforms.parameters import PARAMETERS

Arrays = dict[str, da.Array]  # path relative to the stage -> lazy array
_STAGE_NAME = re.compile(r"^(raw|derived/[A-Za-z0-9_.+-]+)$")
IMAGES, FEATURES = "images", "features"  # what a dataset stage holds per split, beside its labels


@dataclass(frozen=True)
class Transform:
    """A named transform: its default parameters, output name and lazy array builder.

    Its parameters' ranges and choices are in :data:`PARAMETERS`. ``needs``
    is what its input dataset must hold (images or features) and ``gives`` what its output
    holds (None: not a dataset, e.g. ``mean``), so a chain that cannot work is refused up front.
    """

    name: str
    defaults: dict[str, Any]
    output_name: Callable[[dict[str, Any]], str]
    build: Callable[[Store, str, dict[str, Any]], Arrays]
    help: str
    needs: frozenset[str] = frozenset({IMAGES})
    gives: str | None = IMAGES


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
) -> StageOutcome:
    """Run one transform as a stage: skip if complete with the same inputs and parameters."""
    transform = TRANSFORMS.get(name)
    if transform is None:
        raise UserError(f"transform {name!r}: unknown; choose from {', '.join(sorted(TRANSFORMS))}")
    params = resolve_params(transform, params or {})
    if not _STAGE_NAME.match(input_stage) or ".." in input_stage:
        raise UserError(f"--input {input_stage}: not a dataset stage; use raw or derived/<name>")
    stage = output_stage(name, params, input_stage)
    input_attrs = store.stage_attrs(input_stage)
    if not input_attrs or not input_attrs.get("complete"):
        raise UserError(f"{store}: input stage '{input_stage}' is missing or incomplete; run it first")
    _check_input(store, transform, input_stage)
    fingerprint = {
        "transform": name,
        "params": params,
        "input": input_stage,
        "input_fingerprint": input_attrs.get("fingerprint"),
    }

    def conflict() -> None:
        raise UserError(f"{store}: '{stage}' exists with other parameters or inputs; use --force to replace it")

    def build() -> tuple[Arrays, dict[str, Any]]:
        return transform.build(store, input_stage, params), {"transform": name, "params": params, "input": input_stage}

    return StageOutcome(produce_stage(store, client, stage, fingerprint, force, build, conflict), stage)


def resolve_params(transform: Transform, params: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check each value's type and range, refusing unknown names.

    An integer parameter takes an integer (or its text), never a fraction (2.5 is not
    silently 2); a number takes an integer or a float; a flag takes true or false.
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
            raise UserError(f"transform {transform.name}: {key}={value!r} is not {_KIND_NAMES[kind]}")
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
        raise UserError(f"transform {name}: {key} must be one of {', '.join(param.choices)}, got {value!r}")
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
        raise UserError(f"transform {name}: {key} must lie in {interval}, got {shown}")
    if isinstance(value, int):
        raise UserError(f"transform {name}: {key} must be {low:g} or more, got {value}")
    bound = f" of at least {low:g}" if param.min is not None else ""
    raise UserError(f"transform {name}: {key} must be a finite number{bound}, got {value}")


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


def output_stage(name: str, params: dict[str, Any], input_stage: str) -> str:
    """``derived/<step>`` for a transform of raw, ``derived/<input>+<step>`` for a chain."""
    step = TRANSFORMS[name].output_name(params)
    return f"derived/{step}" if input_stage == "raw" else f"{input_stage}+{step}"


# -- builders: lazy arrays per transform ----------------------------------------------
def _build_shift(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Every training image at every offset, rows in a seeded random order; test copied.

    Output row r is image ``order[r] % n`` at offset ``order[r] // n`` for a seeded
    permutation ``order`` of ``n * m`` rows. Each output chunk is one task that gathers
    its rows from the (small, 47 MB) input and shifts them, so a worker holds the input
    plus a few output chunks, never the expanded set.
    """
    offsets = np.array(_offsets(p), dtype=np.int8)
    images = store.read(f"{input_stage}/train/images").rechunk({0: -1})  # one block: the gather source
    n, m, chunk = images.shape[0], len(offsets), p["chunk_size"]
    permutation = dask.delayed(_permutation, pure=True)(
        p["seed"], n * m, dask_key_name=f"shift-order-{p['seed']}-{n * m}"
    )
    order = da.from_delayed(permutation, shape=(n * m,), dtype=np.int64).rechunk(chunk)
    gather = {"n": n, "offsets": offsets}
    arrays = {
        "train/images": da.blockwise(
            _gather_shifted,
            "ijk",
            order,
            "i",
            images,
            "xjk",
            concatenate=True,
            dtype=images.dtype,
            name=f"shift-images-{tokenize(order.name, images.name, offsets)}",
            **gather,
        ),
        "train/labels": _gather_rows(order, store.read(f"{input_stage}/train/labels"), n),
        "train/source_index": _gather_rows(order, _source_index(store, input_stage), n),
        "train/offset": da.blockwise(
            _offsets_of,
            "ij",
            order,
            "i",
            new_axes={"j": 2},
            dtype=np.int8,
            name=f"shift-offsets-{tokenize(order.name, offsets, n)}",
            **gather,
        ),
    }
    return {**arrays, **_copy_split(store, input_stage, "test")}


def _permutation(seed: int, size: int) -> np.ndarray:
    """The seeded row order of the expansion, computed once on a worker (12 MB at 25x)."""
    return np.random.default_rng(seed).permutation(size)


def _gather_rows(order: da.Array, values: da.Array, n: int) -> da.Array:
    """Per-row values (labels, source index) of the images each output row came from."""
    return da.blockwise(
        lambda o, v: v[o % n],
        "i",
        order,
        "i",
        values.rechunk(-1),
        "x",
        concatenate=True,
        dtype=values.dtype,
        name=f"shift-gather-{values.name}",
    )


def _gather_shifted(order: np.ndarray, images: np.ndarray, n: int, offsets: np.ndarray) -> np.ndarray:
    """Rows ``order`` of the expansion: image ``order % n`` shifted by ``offsets[order // n]``."""
    return _shift_rows(images[order % n], offsets[order // n])


def _offsets_of(order: np.ndarray, n: int, offsets: np.ndarray) -> np.ndarray:
    return offsets[order // n]


def _shift_rows(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each image by its own (dx, dy) row of ``offsets`` (shape (n, 2))."""
    out = np.empty_like(images)
    for dx, dy in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dx) & (offsets[:, 1] == dy))
        out[rows] = kernels.shift_images(images[rows], int(dx), int(dy))
    return out


def _per_image(
    function: Callable[..., np.ndarray],
    out_shape: Callable[[tuple[int, ...]], tuple[int, ...]],
    dtype: Any,
    params: tuple[str, ...] = (),
) -> Callable[[Store, str, dict[str, Any]], Arrays]:
    """Builder for transforms applied image by image to both splits, chunk by chunk."""

    def build(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
        arrays: Arrays = {}
        for split in SPLITS:
            images = store.read(f"{input_stage}/{split}/images")
            shape = out_shape(images.shape[1:])
            args = {key: p[key] for key in params}
            arrays[f"{split}/images"] = da.map_blocks(
                function,
                images,
                **args,
                dtype=dtype,
                chunks=(images.chunks[0], *shape),
                name=f"{function.__name__}-{split}-{tokenize(images.name, args)}",
            )
            arrays.update(_carry_labels(store, input_stage, split))
        return arrays

    return build


def _build_scale(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """dask-ml StandardScaler fitted on the training split only, applied to both (float32)."""
    from dask_ml.preprocessing import StandardScaler

    flat = {split: _flat(store.read(f"{input_stage}/{split}/images")).astype(np.float64) for split in SPLITS}
    scaler = StandardScaler().fit(flat["train"])
    arrays: Arrays = {}
    for split in SPLITS:
        arrays[f"{split}/features"] = scaler.transform(flat[split]).astype(np.float32)
        arrays.update(_carry_labels(store, input_stage, split))
    arrays["mean"] = da.from_array(np.asarray(scaler.mean_))
    arrays["scale"] = da.from_array(np.asarray(scaler.scale_))
    return arrays


def _build_variance_threshold(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Keep the pixels whose training-set variance exceeds the threshold (as sklearn's VarianceThreshold)."""
    flat = {split: _flat(store.read(f"{input_stage}/{split}/images")) for split in SPLITS}
    variance = flat["train"].astype(np.float64).var(axis=0).compute()
    keep = variance > p["threshold"]
    if not keep.any():
        raise UserError(f"transform varthresh: no pixel has variance above {p['threshold']}")
    arrays: Arrays = {"selected": da.from_array(keep), "variance": da.from_array(variance)}
    for split in SPLITS:
        arrays[f"{split}/features"] = flat[split][:, keep]
        arrays.update(_carry_labels(store, input_stage, split))
    return arrays


def _build_mean(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """The mean training image overall and per digit (float64)."""
    images = store.read(f"{input_stage}/train/images").astype(np.float64)
    labels = store.read(f"{input_stage}/train/labels")
    per_class = da.stack([images[(labels == digit).compute()].mean(axis=0) for digit in range(10)])
    return {"mean_image": images.mean(axis=0), "per_class": per_class}


def _build_augment(store: Store, input_stage: str, p: dict[str, Any], name: str = "augment") -> Arrays:
    """Training set plus shifted and rotated copies, copy-major: row ``j * n + i`` is copy j of image i.

    Copy 0 is the original; then the other shifts of ``radius``/``shape`` (as ``shift``),
    then rotations by ``-degrees`` and ``+degrees`` (none when degrees is 0). Per row it
    records ``copy`` (0 = original), ``offset`` (dx, dy), ``angle`` and ``source_index``;
    the test split is copied unchanged.
    """
    copies = augment_copies(p, name)
    images = store.read(f"{input_stage}/train/images").rechunk({0: p["chunk_size"]})
    n, m = images.shape[0], len(copies)
    blocks = [
        images.map_blocks(
            _apply_copy,
            dx=dx,
            dy=dy,
            degrees=angle,
            dtype=images.dtype,
            name=f"augment-{j}-{tokenize(images.name, dx, dy, angle)}",
        )
        for j, (dx, dy, angle) in enumerate(copies)
    ]
    per_copy = _per_copy_rows(copies, n, images.chunks[0])
    labels = store.read(f"{input_stage}/train/labels").rechunk(images.chunks[0])
    source = _source_index(store, input_stage).rechunk(images.chunks[0])
    arrays = {
        "train/images": da.concatenate(blocks, axis=0),
        "train/labels": da.concatenate([labels] * m),
        "train/source_index": da.concatenate([source] * m),
        **per_copy,
    }
    return {**arrays, **_copy_split(store, input_stage, "test")}


def augment_copies(p: dict[str, Any], name: str = "augment") -> list[tuple[int, int, float]]:
    """The (dx, dy, degrees) of every copy an ``augment``/``rotate`` stage makes, the original first."""
    shifts = _offsets({"radius": p.get("radius", 0), "shape": p.get("shape", "cross")}, "augment")
    copies = [(dx, dy, 0.0) for dx, dy in shifts]
    degrees = float(p["degrees"])
    if not 0 <= degrees <= 180:  # checked with the transform's own name before; kept for direct callers
        raise UserError(f"transform {name}: degrees must lie in [0, 180], got {degrees:g}")
    return copies + ([(0, 0, -degrees), (0, 0, degrees)] if degrees else [])


def _apply_copy(images: np.ndarray, dx: int, dy: int, degrees: float) -> np.ndarray:
    """One augmentation copy of a block: shifted by (dx, dy), or rotated when degrees is non-zero."""
    if degrees:
        return kernels.rotate_images(images, degrees)
    return kernels.shift_images(images, dx, dy) if (dx or dy) else images.copy()


def _per_copy_rows(copies: list[tuple[int, int, float]], n: int, chunks: tuple[int, ...]) -> Arrays:
    """``train/copy``, ``train/offset`` and ``train/angle`` for the copy-major rows."""
    m = len(copies)
    table = np.array(copies, dtype=np.float64)
    copy_ids = np.repeat(np.arange(m, dtype=np.int16), n)
    return {
        "train/copy": da.from_array(copy_ids, chunks=chunks * m),
        "train/offset": da.from_array(np.repeat(table[:, :2].astype(np.int8), n, axis=0), chunks=(chunks * m, 2)),
        "train/angle": da.from_array(np.repeat(table[:, 2].astype(np.float32), n), chunks=chunks * m),
    }


def _augment_name(p: dict[str, Any]) -> str:
    """``aug<m>x-s<r><c|s>-r<deg>``: number of copies, shift set and rotation angle."""
    shifts = f"s{p['radius']}{p['shape'][0]}" if p["radius"] else "s0"
    return f"aug{len(augment_copies(p))}x-{shifts}-r{p['degrees']:g}"


def _build_rotate(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """Originals plus copies rotated by -degrees and +degrees (an ``augment`` without shifts)."""
    return _build_augment(store, input_stage, {**p, "radius": 0, "shape": "cross"}, name="rotate")


def _build_pca(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """dask-ml PCA fitted on the input's training rows only (``fit_on``: all, or the originals of an
    augmented input); both splits projected (float32).

    With ``scale_power`` p > 0 each feature is multiplied by explained_variance ** -p
    (partial whitening; p = 0.5 on unwhitened PCA equals ``whiten``). Also stores
    ``components`` (n_components, d), ``mean``, ``explained_variance`` and
    carries labels, ``source_index`` and (from an augmented input) ``copy``.
    """
    from dask_ml.decomposition import PCA

    flat = {
        split: _flat(store.read_xy(input_stage, split)[0]).rechunk({0: p["chunk_size"], 1: -1}).astype(np.float32)
        for split in SPLITS
    }
    if not 1 <= p["n_components"] <= flat["train"].shape[1]:
        raise UserError(
            f"transform pca: n_components must be between 1 and {flat['train'].shape[1]}, got {p['n_components']}"
        )
    fit_rows = flat["train"]
    if p["fit_on"] == "originals" and store.has(f"{input_stage}/train/copy"):
        fit_rows = fit_rows[np.flatnonzero(store.read(f"{input_stage}/train/copy").compute() == 0)]
    pca = PCA(
        n_components=p["n_components"], whiten=p["whiten"], svd_solver=p["svd_solver"], random_state=p["seed"]
    ).fit(fit_rows.rechunk({0: p["chunk_size"]}))
    arrays: Arrays = {
        "components": da.from_array(np.asarray(pca.components_, dtype=np.float32)),
        "mean": da.from_array(np.asarray(pca.mean_, dtype=np.float32)),
        "explained_variance": da.from_array(np.asarray(pca.explained_variance_)),
    }
    scale = (np.asarray(pca.explained_variance_) ** -p["scale_power"]).astype(np.float32)
    for split in SPLITS:
        arrays[f"{split}/features"] = pca.transform(flat[split]).astype(np.float32) * scale
        arrays.update(_carry_labels(store, input_stage, split))
    if store.has(f"{input_stage}/train/copy"):
        arrays["train/copy"] = store.read(f"{input_stage}/train/copy")
    return arrays


def _pca_name(p: dict[str, Any]) -> str:
    """``pca<n>``, ``w`` when whitened, ``p<power>`` when partially whitened."""
    power = f"p{p['scale_power']:g}" if p["scale_power"] else ""
    return f"pca{p['n_components']}" + ("w" if p["whiten"] else "") + power


def _build_sample(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    """A seeded random subset of ``train`` training and ``test`` test rows (0 keeps a split whole), in order."""
    arrays: Arrays = {}
    rng = np.random.default_rng(p["seed"])
    for split in SPLITS:
        labels = store.read(f"{input_stage}/{split}/labels")
        size = p[split]
        if size > labels.shape[0]:  # its lower bound is in PARAMETERS
            raise UserError(f"transform sample: {split}={size} must lie in [0, {labels.shape[0]}]")
        rows = np.sort(rng.choice(labels.shape[0], size, replace=False)) if size else np.arange(labels.shape[0])
        for path, array in _copy_split(store, input_stage, split).items():
            arrays[path] = array[rows]
    return arrays


# -- helpers ----------------------------------------------------------------------------
def _copy_split(store: Store, input_stage: str, split: str) -> Arrays:
    return {f"{split}/images": store.read(f"{input_stage}/{split}/images"), **_carry_labels(store, input_stage, split)}


def _carry_labels(store: Store, input_stage: str, split: str) -> Arrays:
    """Labels, and for training rows the original image index, carried through unchanged."""
    arrays = {f"{split}/labels": store.read(f"{input_stage}/{split}/labels")}
    if split == "train":
        arrays["train/source_index"] = _source_index(store, input_stage)
    return arrays


def _source_index(store: Store, input_stage: str) -> da.Array:
    """Which original training image each row came from (``arange`` for raw data)."""
    if input_stage != "raw":
        return store.read(f"{input_stage}/train/source_index")
    labels = store.read("raw/train/labels")
    return da.arange(labels.shape[0], chunks=labels.chunks, dtype=np.int64)


def _offsets(p: dict[str, Any], name: str = "shift") -> list[tuple[int, int]]:
    """The shift offsets of ``radius``/``shape``; a bad value is a UserError naming transform ``name``."""
    try:
        return kernels.shift_offsets(p["radius"], p["shape"])
    except ValueError as exc:
        raise UserError(f"transform {name}: {exc}") from None


def _flat(images: da.Array) -> da.Array:
    return images.reshape(images.shape[0], -1) if images.ndim > 2 else images


def _downscaled_shape(factor: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    return lambda shape: tuple(-(-s // factor) for s in shape)


def _downscale(images: np.ndarray, factor: int) -> np.ndarray:
    return kernels.downscale_local_mean(images, factor).astype(np.float32)


def _build_downscale(store: Store, input_stage: str, p: dict[str, Any]) -> Arrays:
    return _per_image(_downscale, _downscaled_shape(p["factor"]), np.float32, params=("factor",))(store, input_stage, p)


def _same(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform(
            "shift",
            {"radius": 1, "shape": "cross", "seed": 42, "chunk_size": 5000},
            lambda p: f"shift{len(_offsets(p))}x",
            _build_shift,
            "training set expanded with one-pixel shifts (radius 1 cross: 5x; radius 2 square: 25x)",
        ),
        Transform(
            "downscale",
            {"factor": 3},
            lambda p: f"down{-(-28 // p['factor'])}",
            _build_downscale,
            "k x k local mean (3 -> 10x10 images, zero-padded edge as skimage)",
        ),
        Transform(
            "deskew", {}, lambda p: "deskew", _per_image(kernels.deskew, _same, np.uint8), "second-moment affine deskew"
        ),
        Transform(
            "blur",
            {"sigma": 1.0},
            lambda p: f"blur{p['sigma']:g}",
            _per_image(kernels.gaussian_blur, _same, np.uint8, params=("sigma",)),
            "Gaussian blur",
        ),
        Transform(
            "scale", {}, lambda p: "scaled", _build_scale, "dask-ml StandardScaler fitted on train", gives=FEATURES
        ),
        Transform(
            "varthresh",
            {"threshold": 0.0},
            lambda p: f"varthresh{p['threshold']:g}",
            _build_variance_threshold,
            "variance-threshold feature selection (fitted on train)",
            gives=FEATURES,
        ),
        Transform("mean", {}, lambda p: "mean", _build_mean, "mean image, overall and per digit", gives=None),
        Transform(
            "augment",
            {"radius": 1, "shape": "cross", "degrees": 10.0, "chunk_size": 5000},
            _augment_name,
            _build_augment,
            "training set plus shifted copies (as shift) and copies rotated by +-degrees, "
            "copy-major, with copy/offset/angle/source_index per row",
        ),
        Transform(
            "rotate",
            {"degrees": 10.0, "chunk_size": 5000},
            lambda p: f"rot{p['degrees']:g}x3",
            _build_rotate,
            "training set plus copies rotated by -degrees and +degrees (3x)",
        ),
        Transform(
            "sample",
            {"train": 0, "test": 0, "seed": 0},
            lambda p: f"sample{p['train']}-{p['test']}",
            _build_sample,
            "seeded random subset of the training and test rows (for quick runs)",
        ),
        Transform(
            "pca",
            {
                "n_components": 50,
                "whiten": False,
                "scale_power": 0.0,
                "fit_on": "all",
                "svd_solver": "full",
                "seed": 0,
                "chunk_size": 10000,
            },
            _pca_name,
            _build_pca,
            "dask-ml PCA fitted on the training split only (float32 features; "
            "optional whitening, or partial whitening by explained_variance ** -scale_power)",
            needs=frozenset({IMAGES, FEATURES}),
            gives=FEATURES,
        ),
    )
}
