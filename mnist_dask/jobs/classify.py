"""Classify a user's own digit images with a finished run's k-NN model.

Images are read upright (EXIF orientation), as grey levels (16-bit scaled, transparency
composited), then preprocessed the way MNIST was made: inverted when dark-on-light,
cropped to the ink's bounding box, scaled into a 20x20 box keeping the aspect ratio, and
centred by centre of mass in a 28x28 field.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.jobs.records import RESULT_FILE, read_result
from mnist_dask.jobs.run_store import store_of_run
from mnist_dask.neighbors.knn import KNNClassifier
from mnist_dask.transforms.registry import TRANSFORMS

MAX_PIXELS = 40_000_000


def classify_files(
    paths: list[str | Path], run_dir: str | Path, store: Store | None = None
) -> list[tuple[str, int, float]]:
    """(file, predicted digit, its probability) per image, from the run's model refitted on its training set.

    The training set comes from the run's own store, or from ``store`` where that holds the same raw images
    (the run's store moved or copied; another store is a UserError, see :func:`store_of_run`).
    """
    result = read_result(Path(run_dir))
    images = np.stack([load_digit(p) for p in paths])  # every file checked before the model is built
    model_params = result.get("model", {})
    if "n_neighbors" not in model_params:
        raise UserError(f"{run_dir}: the run has no k-NN model to classify with")
    store = _training_store(result, Path(run_dir), store)
    dataset = result.get("dataset", "raw")
    for step in query_steps(store, dataset, Path(run_dir)):
        images = step(images)
    X, y = store.read_xy(dataset, "train")
    if X.shape[1] != 784:
        raise UserError(
            f"{run_dir}: its model works on {dataset} ({X.shape[1]} features); classify needs a run on 28x28 images"
        )
    model = KNNClassifier(n_neighbors=model_params["n_neighbors"], weights=model_params.get("weights", "uniform"))
    model.fit(X.compute(), y.compute())
    proba = model.predict_proba(images.reshape(len(images), -1))
    best = np.argmax(proba, axis=1)
    return [(str(p), int(model.classes_[i]), float(proba[row, i])) for row, (p, i) in enumerate(zip(paths, best))]


def query_steps(store: Store, dataset: str, run_dir: Path) -> list[Callable[[np.ndarray], np.ndarray]]:
    """What a user's image needs, in order, to look like the run's training images: the per-image transforms
    (deskew, blur: a transform's ``query``) of the dataset's chain, read from its stages' records; the row-only
    ones (shift, augment, rotate, sample: ``rows_only``) need nothing.

    A chain with any other transform (scaling, PCA, downscaling, ...) is refused in one line: its model works on
    features a single image cannot be given here, and comparing a raw image with them would be silently wrong.
    """
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    stage = dataset
    while stage != "raw":
        attrs = store.stage_attrs(stage)
        if not attrs or not attrs.get("complete"):
            raise UserError(
                f"{store}: {stage}, which the run's training set ({dataset}) is made from, is not in the store "
                f"(dropped, or not finished); run the job again to make it"
            )
        fingerprint = attrs.get("fingerprint") or {}
        name, params = fingerprint.get("transform"), fingerprint.get("params") or {}
        transform = TRANSFORMS.get(name) if isinstance(name, str) else None
        if transform is not None and transform.query is not None:
            steps.insert(0, _with_params(transform.query, params))
        elif transform is None or not transform.rows_only:
            what = f"'{name}' in its chain" if name else "no record of how it was made"
            raise UserError(
                f"{run_dir}: its model works on {dataset}, with {what}; classify takes runs on images "
                "as they are, shifted, rotated, sampled, deskewed or blurred"
            )
        stage = fingerprint.get("input") or "raw"
    return steps


def _with_params(
    function: Callable[[np.ndarray, dict[str, Any]], np.ndarray], params: dict[str, Any]
) -> Callable[[np.ndarray], np.ndarray]:
    """``function`` with the stage's parameters bound: a step taking images only."""
    return lambda images: function(images, params)


def _training_store(result: dict[str, Any], run_dir: Path, given: Store | None) -> Store:
    """The store holding the run's training set; a one-line UserError, saying to pass --store, when the run's
    own store is gone (or result.json names none) and no --store names where it is now."""
    store = store_of_run(result, run_dir, given)
    result_file = run_dir / RESULT_FILE
    if store is None:
        raise UserError(f"{result_file}: names no store; pass --store with the store the run was made on")
    if given is None and not store.exists():
        raise UserError(
            f"{store.url}: the run's store ({result_file} names it) is gone; "
            "pass --store with where it is now (or a copy of it)"
        )
    return store


def load_digit(path: str | Path) -> np.ndarray:
    """Read one image file (checked: exists, non-empty, an image, not huge) as an MNIST-style 28x28 uint8."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file")
        with warnings.catch_warnings():  # Pillow warns of a large image on stderr: refuse it instead
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only: the size is known before decoding
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise UserError(f"{path}: image too large ({width}x{height}; at most {MAX_PIXELS:,} pixels)")
                gray = grey_levels(ImageOps.exif_transpose(image))  # upright as a phone or viewer shows it
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # refused from the header
        raise UserError(f"{path}: image too large (at most {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read (PNG, BMP, JPEG, ...)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the image ({exc})") from None
    return mnist_style(gray, str(path))


def grey_levels(image: Image.Image) -> np.ndarray:
    """An image's grey levels as floats 0-255, whatever its mode.

    16-bit grey (modes ``I;16*``, and ``I`` holding 0-65535) is scaled by its bit depth rather
    than clipped at 255. Transparency is composited onto a background contrasting with the
    ink (the opaque pixels), so ink drawn on a transparent background is kept, whatever its colour.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=float)
        top = 65535.0 if image.mode != "I" or values.max() <= 65535 else float(values.max())
        return np.clip(values, 0, None) / max(top, 1.0) * 255
    if image.mode == "F":
        values = np.asarray(image, dtype=float)
        return np.clip(values, 0, None) / max(float(values.max()), 1.0) * 255
    if not _has_transparency(image):
        return np.asarray(image.convert("L"), dtype=float)
    levels = np.asarray(image.convert("RGBA").convert("LA"), dtype=float)
    grey, alpha = levels[..., 0], levels[..., 1] / 255
    if alpha.sum() == 0:
        return np.zeros_like(grey)  # all transparent: no ink
    ink = float((grey * alpha).sum() / alpha.sum())  # the opaque pixels' mean level
    background = 255.0 if ink < 128 else 0.0  # dark ink on white, light ink on black
    return grey * alpha + background * (1 - alpha)


def _has_transparency(image: Image.Image) -> bool:
    """Whether the image has an alpha channel or a transparent colour (palette or ``tRNS``)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def mnist_style(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Preprocess a grayscale image (0-255) like MNIST: ink bright on black, 20x20 box, centred by mass."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 255 - gray if np.median(border) > 127 else gray  # dark-on-light paper: invert
    ink = np.clip(ink - np.median(border if np.median(border) <= 127 else 255 - border), 0, 255)
    rows, cols = np.nonzero(ink > 0.1 * ink.max())
    if ink.max() <= 0 or not len(rows):
        raise UserError(f"{name}: no ink found (a blank image)")
    box = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.asarray(Image.fromarray(box.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), dtype=float)
    field = np.zeros((28, 28))
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    field[top : top + small.shape[0], left : left + small.shape[1]] = small
    cy, cx = ndimage.center_of_mass(field)
    field = ndimage.shift(field, (round(14 - cy), round(14 - cx)), order=0, mode="constant")
    return np.clip(field / max(field.max(), 1) * 255, 0, 255).astype(np.uint8)
