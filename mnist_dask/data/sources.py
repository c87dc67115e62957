"""Where MNIST comes from: OpenML, a folder or URL of IDX files, or a pair of CSV files.

Each source yields the same arrays, ``images (N, 28, 28) uint8`` and ``labels (N,) uint8``
per split, fully validated. ``--source`` text is parsed once on the client into a
small picklable :class:`Source`; the reading itself runs on a Dask worker.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import fsspec
import numpy as np

from mnist_dask.data import download, idx
from mnist_dask.data.defaults import DEFAULT_SOURCE, SOURCE_ENV
from mnist_dask.errors import UserError, unreadable
from mnist_dask.locations import local_path

SPLITS = ("train", "test")
UTF8_BOM = b"\xef\xbb\xbf"  # what Excel and Notepad put before "UTF-8" CSV text
OPENML_NAME, OPENML_VERSION, OPENML_TRAIN = "mnist_784", 1, 60_000

_IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Source:
    """A parsed ``--source``: its kind and where its files are (absolute paths or URLs)."""

    kind: str  # "openml" | "idx" | "csv"
    locations: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.kind + (":" + ",".join(self.locations) if self.locations else "")

    def input_checksums(self) -> dict[str, str]:
        """MD5 of every input's content (IDX: uncompressed, as mirrors re-compress; openml: the arrays)."""
        if self.kind == "openml":
            images, labels = _openml_arrays()
            return {"openml:mnist_784": _arrays_md5(images, labels)}
        return {name: _md5_of(path) for name, path in self._files().items()}

    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Read and validate one split: ``(images (N,28,28) uint8, labels (N,) uint8)``."""
        if self.kind == "openml":
            images, labels = _openml_arrays()
            part = slice(None, OPENML_TRAIN) if split == "train" else slice(OPENML_TRAIN, None)
            return images[part], labels[part]
        if self.kind == "csv":
            path = self.locations[SPLITS.index(split)]
            return read_csv(_read_bytes(path), path)
        # only this split's two files: a remote source must not download (and MD5-check) the others
        images_path = _locate_idx(self.locations, _IDX_STEMS[(split, "images")])
        labels_path = _locate_idx(self.locations, _IDX_STEMS[(split, "labels")])
        images = idx.parse_images(_read_bytes(images_path), images_path)
        labels = idx.parse_labels(_read_bytes(labels_path), labels_path)
        if len(images) != len(labels):
            raise UserError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels")
        return images, labels

    def _files(self) -> dict[str, str]:
        """Map ``train-images`` etc. to a readable local path (downloading remote IDX files)."""
        if self.kind == "csv":
            return dict(zip(("train-csv", "test-csv"), self.locations))
        return {f"{split}-{what}": _locate_idx(self.locations, stem) for (split, what), stem in _IDX_STEMS.items()}


def parse_source(text: str | None) -> Source:
    """Parse ``openml``, ``idx[:DIR_OR_URL]`` or ``csv:TRAIN,TEST`` (default: $MNIST_DASK_SOURCE, then openml).

    Errors name the text (and the variable, when it came from $MNIST_DASK_SOURCE); the command
    line adds the option's name.
    """
    origin = f"{SOURCE_ENV}=" if not text and os.environ.get(SOURCE_ENV) else ""
    text = (text or os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE).strip()
    kind, _, rest = text.partition(":")
    if kind == "openml" and not rest:
        return Source("openml")
    if kind == "idx":
        return Source("idx", (_absolute(rest),) if rest else download.IDX_MIRRORS)
    if kind == "csv":
        parts = [p for p in rest.split(",") if p]
        if len(parts) != 2:
            raise UserError(f"{origin}{text}: csv needs two files, csv:TRAIN.csv,TEST.csv")
        return Source("csv", tuple(_absolute(p) for p in parts))
    raise UserError(f"{origin}{text}: unknown source; use openml, idx:DIR_OR_URL or csv:TRAIN,TEST")


def read_csv(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``label,pixel1..pixel784`` rows (optional header) into validated arrays.

    Plain CSV as spreadsheets write it is accepted: a UTF-8 byte-order mark, quoted numbers
    (``"5","0",...``), blank lines, and ``;`` as the separator (as Excel writes CSV where the
    decimal mark is a comma; with integer cells the two cannot be confused). Line numbers in
    errors count every line of the file, as an editor does.
    """
    if not raw.strip():
        raise UserError(f"{name}: empty file")
    try:
        text = raw.removeprefix(UTF8_BOM).decode("ascii")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not a text CSV file (non-ASCII bytes)") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise UserError(f"{name}: empty file")
    first = rows[0][1]
    sep = ";" if "," not in first and ";" in first else ","
    skip = 0 if _is_number(_cell(first.split(sep)[0])) else 1  # a header's first field is a name, not a number
    data = rows[skip:]
    if not data:
        raise UserError(f"{name}: header only, no data rows")
    for number, line in data:
        if line.count(sep) != 784:
            raise UserError(
                f"{name}: line {number} has {line.count(sep) + 1} columns, expected 785 (label + 784 pixels)"
            )
    try:
        table = np.loadtxt(
            [line for _, line in data], delimiter=sep, quotechar='"', dtype=np.int64, ndmin=2, comments=None
        )
    except ValueError:
        raise UserError(f"{name}: {_first_non_integer(data, sep)}") from None
    pixels, labels = table[:, 1:], table[:, 0]
    bad = np.argwhere((pixels < 0) | (pixels > 255))
    if bad.size:
        row, col = bad[0]
        raise UserError(
            f"{name}: pixel {int(pixels[row, col])} at line {data[row][0]}, column {col + 2} is outside 0-255"
        )
    if (labels < 0).any() or (labels > 9).any():
        row = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise UserError(f"{name}: label {int(labels[row])} at line {data[row][0]} is outside 0-9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def _first_non_integer(data: list[tuple[int, str]], sep: str) -> str:
    """Where the first cell that is not an integer is, by file line (as an editor counts) and column."""
    for number, line in data:
        for column, cell in enumerate(line.split(sep), start=1):
            if not _cell(cell).lstrip("+-").isdigit():
                return f"non-integer value {cell.strip()!r} at line {number}, column {column}"
    return "non-integer value"


def _cell(text: str) -> str:
    """A cell's text without surrounding blanks and quotes."""
    text = text.strip()
    return text[1:-1].strip() if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _locate_idx(locations: tuple[str, ...], stem: str) -> str:
    """Find one IDX file: a local folder is read as is, a URL is downloaded and MD5-checked."""
    folder = local_path(locations[0]) if len(locations) == 1 else None
    if folder is not None:
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder")
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (folder / name).is_file():
                return str(folder / name)
        raise UserError(f"{folder}: missing file {stem}[.gz]")
    checksum = download.MNIST_CHECKSUMS[stem + ".gz"]  # the content MD5 holds for the uncompressed file too
    errors = []
    for base in locations:  # mirrors, in order
        try:
            return str(_fetch_idx(base.rstrip("/") + "/" + stem, checksum))
        except UserError as exc:
            errors.append(str(exc))
    raise UserError("; ".join(errors))


def _fetch_idx(url: str, checksum: download.Checksum) -> Path:
    """Download ``URL.gz``, or the uncompressed ``URL`` when the server has no ``.gz``; a cached copy of either
    is used first, so a finished download needs no network."""
    names = (url + ".gz", url)
    for name in names:
        copy = download.cached(name, checksum)
        if copy is not None:
            return copy
    try:
        return download.fetch(names[0], checksum)
    except download.RemoteFileMissing:
        pass
    try:
        return download.fetch(names[1], checksum)
    except download.RemoteFileMissing:
        raise download.RemoteFileMissing(f"{url}[.gz]: {download.not_found(url)}") from None


def _openml_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Fetch mnist_784 from OpenML (cached by scikit-learn) as uint8 images and labels."""
    from sklearn.datasets import fetch_openml

    data_home = str(download.usable_cache_dir() / "openml")  # a file or a read-only folder: its own one line
    try:
        with warnings.catch_warnings():  # its "network error ... Retrying" lines: the one error line below says it
            warnings.filterwarnings("ignore", message="A network error occurred", category=UserWarning)
            bunch = fetch_openml(OPENML_NAME, version=OPENML_VERSION, as_frame=False, data_home=data_home)
    except Exception as exc:  # urllib, HTTP and parse errors all mean: no usable download
        reason = exc.reason if isinstance(exc, URLError) else exc  # not "<urlopen error ...>"
        raise UserError(
            f"openml:{OPENML_NAME}: could not fetch the dataset ({reason}); "
            "for a local copy of the IDX files use --source idx:DIR"
        ) from None
    pixels = np.asarray(bunch.data)
    if pixels.shape != (70_000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"openml:{OPENML_NAME}: unexpected data of shape {pixels.shape}")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(bunch.target).astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"openml:{OPENML_NAME}: labels outside 0-9")
    return images, labels.astype(np.uint8)


def _read_bytes(path: str) -> bytes:
    """Read a whole input file, turning a missing or unreadable file into a user error."""
    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise unreadable(path, exc) from None


def _md5_of(path: str) -> str:
    local = local_path(path)
    if local is not None:
        if not local.is_file():
            raise UserError(f"{path}: no such file")
        return download.content_md5(str(local))
    return hashlib.md5(_read_bytes(path)).hexdigest()


def _arrays_md5(*arrays: np.ndarray) -> str:
    digest = hashlib.md5()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _absolute(location: str) -> str:
    """Make local paths absolute so remote workers with another cwd resolve them alike."""
    path = local_path(location)
    return location if path is None else os.path.abspath(path)
