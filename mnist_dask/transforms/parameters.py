"""What each transform is and what each of its parameters means: the one-line summaries, the defaults,
and the help text and ranges of ``mnist-dask transform NAME --PARAM`` options. :data:`registry.TRANSFORMS`
takes its summaries and defaults from here.

Kept free of heavy imports, so the command line can describe a transform, or refuse a bad option, without
loading dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_dask.errors import UserError


@dataclass(frozen=True)
class Param:
    """One transform parameter: what it does, and its allowed values (a range or a set of choices)."""

    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    min_open: bool = False  # the minimum itself is not allowed


def option_name(key: str) -> str:
    """The command line's option for a transform parameter: ``n_components`` is ``--n-components``."""
    return f"--{key.replace('_', '-')}"


class ParameterError(UserError):
    """A transform parameter's value refused, kept apart from the parameter's name so that the message can
    name it as the user wrote it: the job file's step key (``n_components``, the message as raised) or the
    command line's option (``--n-components``, by :meth:`for_option`)."""

    def __init__(self, transform: str, key: str, problem: str) -> None:
        """``problem``: what follows the parameter's name, e.g. `` must lie in [1, 784], got 900``."""
        self.transform, self.key, self.problem = transform, key, problem
        super().__init__(self._naming(key))

    def __reduce__(self) -> tuple[type[ParameterError], tuple[str, str, str]]:
        """Rebuilt from its parts when it crosses processes (the default would pass the message alone)."""
        return (ParameterError, (self.transform, self.key, self.problem))

    def for_option(self) -> UserError:
        """The same refusal naming the command line's option, for ``mnist-dask transform NAME --OPTION``."""
        return UserError(self._naming(option_name(self.key)))

    def _naming(self, name: str) -> str:
        return f"transform {self.transform}: {name}{self.problem}"


#: each transform's one-line summary (its command's help), in the registry's order
SUMMARIES: dict[str, str] = {
    "shift": "training set expanded with one-pixel shifts (radius 1 cross: 5x; radius 2 square: 25x)",
    "downscale": "k x k local mean (3 -> 10x10 images, zero-padded edge as skimage)",
    "deskew": "second-moment affine deskew",
    "blur": "Gaussian blur",
    "scale": "dask-ml StandardScaler fitted on train",
    "varthresh": "variance-threshold feature selection (fitted on train)",
    "mean": "mean image, overall and per digit",
    "augment": "training set plus shifted copies (as shift) and copies rotated by +-degrees, "
    "copy-major, with copy/offset/angle/source_index per row",
    "rotate": "training set plus copies rotated by -degrees and +degrees (3x)",
    "sample": "seeded random subset of the training and test rows (for quick runs)",
    "pca": "dask-ml PCA fitted on the training split only (float32 features; "
    "optional whitening, or partial whitening by explained_variance ** -scale_power)",
}

#: each transform's parameters and their default values, in the order of its command's options
DEFAULTS: dict[str, dict[str, Any]] = {
    "shift": {"radius": 1, "shape": "cross", "seed": 42, "chunk_size": 5000},
    "downscale": {"factor": 3},
    "deskew": {},
    "blur": {"sigma": 1.0},
    "scale": {},
    "varthresh": {"threshold": 0.0},
    "mean": {},
    "augment": {"radius": 1, "shape": "cross", "degrees": 10.0, "chunk_size": 5000},
    "rotate": {"degrees": 10.0, "chunk_size": 5000},
    "sample": {"train": 0, "test": 0, "seed": 0},
    "pca": {
        "n_components": 50,
        "whiten": False,
        "scale_power": 0.0,
        "fit_on": "all",
        "svd_solver": "full",
        "seed": 0,
        "chunk_size": 10000,
    },
}

_CHUNK = Param("rows per output chunk", min=1)
_SHAPE = Param(
    "offset set: 'cross' (4 per radius step) or 'square' (every offset within the radius)",
    choices=(
        "cross",
        "square",
    ),
)

PARAMETERS: dict[str, dict[str, Param]] = {
    "shift": {
        "radius": Param("largest shift in pixels (1: the notebook's 5x set)", min=0, max=27),
        "shape": _SHAPE,
        "seed": Param("seed of the row shuffle", min=0),
        "chunk_size": _CHUNK,
    },
    "downscale": {"factor": Param("block size k of the k x k local mean (3: 28x28 -> 10x10)", min=1, max=28)},
    "deskew": {},
    "blur": {"sigma": Param("standard deviation of the Gaussian, in pixels", min=0)},
    "scale": {},
    "varthresh": {"threshold": Param("keep features whose variance on train exceeds this", min=0)},
    "mean": {},
    "augment": {
        "radius": Param("largest shift in pixels (0: no shifted copies)", min=0, max=27),
        "shape": _SHAPE,
        "degrees": Param("rotation angle of the two rotated copies (0: none)", min=0, max=180),
        "chunk_size": _CHUNK,
    },
    "rotate": {
        "degrees": Param("rotation angle of the two rotated copies", min=0, max=180, min_open=True),
        "chunk_size": _CHUNK,
    },
    "sample": {
        "train": Param("training rows to keep (0: all)", min=0),
        "test": Param("test rows to keep (0: all)", min=0),
        "seed": Param("seed of the random choice", min=0),
    },
    "pca": {
        "n_components": Param("principal components to keep", min=1, max=784),
        "whiten": Param("scale each component to unit variance (true/false)"),
        "scale_power": Param("multiply component i by explained_variance_i ** -p (0: off; 0.5 = whiten)", min=0),
        "fit_on": Param(
            "fit on 'all' training rows, or only the 'originals' of an augmented input", choices=("all", "originals")
        ),
        "svd_solver": Param(
            "'full' or 'tsqr': exact SVD (dask-ml); 'randomized': randomized SVD with scikit-learn's power "
            "iterations; 'auto': randomized when the input has over 500 rows or features and under 80% "
            "of the smaller dimension are kept, else full",
            choices=("auto", "full", "tsqr", "randomized"),
        ),
        "seed": Param("seed of the randomized solver's random sketch", min=0),
        "chunk_size": _CHUNK,
    },
}
