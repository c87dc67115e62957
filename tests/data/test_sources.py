"""Tests for mnist_dask.data.sources: parsing ``--source``, reading IDX folders and CSV files.

Inputs are small generated IDX/CSV files and the real MNIST folder; no network.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from mnist_dask.data import download
from mnist_dask.data.sources import SOURCE_ENV, Source, parse_source, read_csv
from mnist_dask.errors import UserError
from mnist_dask.locations import local_path


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def assert_split_equals(loaded, images: np.ndarray, labels: np.ndarray) -> None:
    got_images, got_labels = loaded
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.uint8
    assert got_images.shape == images.shape and got_labels.shape == labels.shape
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


# -- parse_source -----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_source_env(monkeypatch):
    monkeypatch.delenv(SOURCE_ENV, raising=False)


def test_openml_source_has_no_locations():
    assert parse_source("openml") == Source("openml", ())
    assert str(parse_source("openml")) == "openml"


def test_idx_folder_source_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = parse_source("idx:data/mnist")
    assert source == Source("idx", (str(tmp_path / "data" / "mnist"),))
    assert str(source) == f"idx:{tmp_path / 'data' / 'mnist'}"


def test_idx_file_url_source_is_a_local_path(tmp_path):
    assert parse_source(f"idx:file://{tmp_path}") == Source("idx", (str(tmp_path),))


@pytest.mark.parametrize(
    ("location", "path"),
    [
        ("storage/mnist.zarr", "storage/mnist.zarr"),
        ("/data/mnist", "/data/mnist"),
        ("file:///data/mnist", "/data/mnist"),
        ("~/mnist", str(Path.home() / "mnist")),
        ("s3://bucket/mnist.zarr", None),
        ("memory://mnist.zarr", None),
        ("https://example.org/mnist/", None),
    ],
)
def test_local_path_tells_a_local_location_from_a_remote_url(location, path):
    assert local_path(location) == (None if path is None else Path(path))


def test_idx_http_url_source_is_kept_as_given():
    assert parse_source("idx:https://example.org/mnist/") == Source("idx", ("https://example.org/mnist/",))


@pytest.mark.parametrize("text", ["idx", "idx:", "  idx  "])
def test_bare_idx_source_uses_the_mirrors_in_order(text):
    source = parse_source(text)
    assert source.kind == "idx"
    assert source.locations == download.IDX_MIRRORS
    assert source.locations[0].startswith("https://")


def test_csv_source_has_two_absolute_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_source("csv:a/train.csv,test.csv") == Source(
        "csv", (str(tmp_path / "a" / "train.csv"), str(tmp_path / "test.csv"))
    )


@pytest.mark.parametrize("text", ["csv:train.csv", "csv:", "csv:a.csv,b.csv,c.csv"])
def test_csv_source_without_exactly_two_files_is_refused(text):
    with pytest.raises(UserError) as exc:
        parse_source(text)
    assert_one_line(exc, f"{text}: csv needs two files")


def test_source_comes_from_the_environment_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv(SOURCE_ENV, f"idx:{tmp_path}")
    assert parse_source(None) == Source("idx", (str(tmp_path),))
    assert parse_source("") == Source("idx", (str(tmp_path),))


def test_explicit_source_overrides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(SOURCE_ENV, f"idx:{tmp_path}")
    assert parse_source("openml") == Source("openml")


def test_default_source_is_openml():
    assert parse_source(None) == Source("openml")


@pytest.mark.parametrize("text", ["hdf5:x.h5", "openml:mnist_784", "IDX:/data", "mnist", "https://x/y"])
def test_unknown_source_is_refused(text):
    with pytest.raises(UserError) as exc:
        parse_source(text)
    assert_one_line(exc, f"{text}: unknown source")


def test_unknown_source_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv(SOURCE_ENV, "parquet:x")
    with pytest.raises(UserError) as exc:
        parse_source(None)
    assert_one_line(exc, f"{SOURCE_ENV}=parquet:x: unknown source")


# -- IDX folders ------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_folder_loads_both_splits(small, tmp_path, gz):
    folder = small.write_idx(tmp_path / "idx", gz=gz)
    source = parse_source(f"idx:{folder}")
    for split in ("train", "test"):
        assert_split_equals(source.load_split(split), small.arrays[f"{split}_images"], small.arrays[f"{split}_labels"])


def test_idx_folder_finds_files_named_with_a_dot_before_idx(small, tmp_path):
    folder = small.write_idx(tmp_path / "idx", gz=True)
    for path in folder.iterdir():  # train-images-idx3-ubyte.gz -> train-images.idx3-ubyte.gz
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    loaded = Source("idx", (str(folder),)).load_split("test")
    assert_split_equals(loaded, small.arrays["test_images"], small.arrays["test_labels"])


def test_idx_input_checksums_are_md5s_of_the_four_files_uncompressed_content(small, tmp_path):
    folder = small.write_idx(tmp_path / "idx")
    checksums = Source("idx", (str(folder),)).input_checksums()
    assert set(checksums) == {"train-images", "train-labels", "test-images", "test-labels"}
    expected = hashlib.md5(small.labels_bytes(small.arrays["test_labels"])).hexdigest()
    assert checksums["test-labels"] == expected
    plain = small.write_idx(tmp_path / "plain", gz=False)  # the same content, not gzipped: the same inputs
    assert Source("idx", (str(plain),)).input_checksums() == checksums


def test_idx_folder_missing_a_file_is_refused(small, tmp_path):
    folder = small.write_idx(tmp_path / "idx", omit=("test-labels",))
    source = Source("idx", (str(folder),))
    with pytest.raises(UserError) as exc:
        source.load_split("test")
    assert_one_line(exc, str(folder), "missing file t10k-labels-idx1-ubyte")
    with pytest.raises(UserError):
        source.input_checksums()


def test_idx_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(UserError) as exc:
        Source("idx", (str(tmp_path / "nowhere"),)).load_split("train")
    assert_one_line(exc, str(tmp_path / "nowhere"), "no such folder")


@pytest.mark.parametrize("n_labels", [39, 41])
def test_image_count_differing_from_label_count_names_both_files(small, tmp_path, n_labels):
    labels = np.resize(small.arrays["train_labels"], n_labels)
    folder = small.write_idx(tmp_path / "idx", overrides={"train-labels": small.labels_bytes(labels, gz=True)})
    with pytest.raises(UserError) as exc:
        Source("idx", (str(folder),)).load_split("train")
    assert_one_line(
        exc,
        str(folder / "train-images-idx3-ubyte.gz"),
        str(folder / "train-labels-idx1-ubyte.gz"),
        "40 images but",
        f"has {n_labels} labels",
    )


def test_malformed_idx_file_in_a_folder_is_reported_with_its_path(small, tmp_path):
    bad = small.images_bytes(small.arrays["test_images"], magic=0x1234, gz=True)
    folder = small.write_idx(tmp_path / "idx", overrides={"test-images": bad})
    with pytest.raises(UserError) as exc:
        Source("idx", (str(folder),)).load_split("test")
    assert_one_line(exc, str(folder / "t10k-images-idx3-ubyte.gz"), "wrong IDX magic number 0x00001234")


def test_real_mnist_folder_loads_the_fixture_arrays(mnist_dir, mnist):
    source = Source("idx", (str(mnist_dir),))
    assert_split_equals(source.load_split("train"), mnist["train_images"], mnist["train_labels"])
    assert_split_equals(source.load_split("test"), mnist["test_images"], mnist["test_labels"])


def test_real_mnist_input_checksums_are_the_canonical_content_md5s(mnist_dir):
    checksums = Source("idx", (str(mnist_dir),)).input_checksums()
    assert checksums == {
        "train-images": "6bbc9ace898e44ae57da46a324031adb",  # canonical MNIST, uncompressed
        "train-labels": "a25bea736e30d166cdddb491f175f624",
        "test-images": "2646ac647ad5339dbf082846283269ea",
        "test-labels": "27ae3e4e09519cfbb04c329615203637",
    }
    assert checksums == {
        name.removesuffix("-idx3-ubyte.gz").removesuffix("-idx1-ubyte.gz").replace("t10k", "test"): checksum.content_md5
        for name, checksum in download.MNIST_CHECKSUMS.items()
    }


# -- CSV --------------------------------------------------------------------------------
ROW = "3," + ",".join(["0"] * 784)


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
def test_csv_gives_the_same_arrays_as_idx_of_the_same_data(small, tmp_path, header):
    train_csv, test_csv = small.write_csv(tmp_path / "csv", header=header)
    folder = small.write_idx(tmp_path / "idx")
    csv_source, idx_source = parse_source(f"csv:{train_csv},{test_csv}"), parse_source(f"idx:{folder}")
    for split in ("train", "test"):
        from_csv, from_idx = csv_source.load_split(split), idx_source.load_split(split)
        assert_split_equals(from_csv, *from_idx)
        assert_split_equals(from_csv, small.arrays[f"{split}_images"], small.arrays[f"{split}_labels"])


def test_csv_with_crlf_line_ends_and_no_final_newline_is_read(small):
    text = small.csv_text(small.arrays["test_images"], small.arrays["test_labels"]).rstrip("\n").replace("\n", "\r\n")
    assert_split_equals(read_csv(text.encode(), "t.csv"), small.arrays["test_images"], small.arrays["test_labels"])


def _quoted(text: str) -> str:
    return "\n".join(",".join(f'"{cell}"' for cell in line.split(",")) for line in text.splitlines()) + "\n"


def _blank_lines(text: str) -> str:
    """Blank lines first, between rows (one of them spaces only) and at the end."""
    lines = text.splitlines()
    return "\n\n" + "\n".join(lines[:3]) + "\n\n   \n" + "\n".join(lines[3:]) + "\n\n"


SPREADSHEET_CSV = {  # what spreadsheets and editors write: all plain CSV, all read as the same arrays
    "utf8-bom": lambda text: "\ufeff" + text,
    "quoted-numbers": _quoted,
    "blank-lines": _blank_lines,
    "semicolons": lambda text: text.replace(",", ";"),
    "all-at-once": lambda text: "\ufeff" + _blank_lines(_quoted(text)).replace(",", ";").replace("\n", "\r\n"),
}


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
@pytest.mark.parametrize("case", list(SPREADSHEET_CSV))
def test_csv_as_spreadsheets_write_it_is_read(small, case, header):
    text = small.csv_text(small.arrays["test_images"], small.arrays["test_labels"], header=header)
    raw = SPREADSHEET_CSV[case](text).encode("utf-8")
    assert_split_equals(read_csv(raw, "t.csv"), small.arrays["test_images"], small.arrays["test_labels"])


def test_csv_line_numbers_count_blank_lines_and_quoted_cells_are_checked(small):
    text = _blank_lines(_quoted(small.csv_text(small.arrays["test_images"], small.arrays["test_labels"])))
    lines = text.splitlines()  # two blank lines, three rows, two blank lines: file line 8 is the fourth row
    lines[7] = '"11"' + lines[7][lines[7].index(",") :]
    with pytest.raises(UserError) as exc:
        read_csv("\n".join(lines).encode(), "q.csv")
    assert_one_line(exc, "q.csv", "label 11 at line 8 is outside 0-9")
    lines[7] = '"x"' + lines[7][lines[7].index(",") :]
    with pytest.raises(UserError) as exc:
        read_csv("\n".join(lines).encode(), "q.csv")
    assert_one_line(exc, "q.csv", "non-integer value '\"x\"' at line 8, column 1")


def test_ingest_of_spreadsheet_csv_files_through_the_cli(small, tmp_path):
    """What the user runs: ``ingest --source csv:TRAIN,TEST`` on the default path (its own LocalCluster)."""
    import subprocess
    import sys

    from mnist_dask.data.store import Store

    train_csv, test_csv = small.write_csv(tmp_path / "csv", header=True)
    for path in (train_csv, test_csv):
        path.write_bytes(SPREADSHEET_CSV["all-at-once"](path.read_text()).encode("utf-8"))
    store = tmp_path / "mnist.zarr"
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "ingest", "--source", f"csv:{train_csv},{test_csv}",
         "--store", str(store), "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for split in ("train", "test"):
        X, y = Store(str(store)).read_xy("raw", split)
        np.testing.assert_array_equal(X.compute().reshape(-1, 28, 28), small.arrays[f"{split}_images"])
        np.testing.assert_array_equal(y.compute(), small.arrays[f"{split}_labels"])


def test_csv_input_checksums_are_md5s_of_the_two_files(small, tmp_path):
    train_csv, test_csv = small.write_csv(tmp_path)
    checksums = Source("csv", (str(train_csv), str(test_csv))).input_checksums()
    assert checksums == {
        "train-csv": hashlib.md5(train_csv.read_bytes()).hexdigest(),
        "test-csv": hashlib.md5(test_csv.read_bytes()).hexdigest(),
    }


def _csv_with(small, line: int, edit) -> str:
    """The small train CSV (no header) with data line ``line`` (1-based) rewritten by ``edit``."""
    lines = small.csv_text(small.arrays["train_images"], small.arrays["train_labels"]).splitlines()
    lines[line - 1] = edit(lines[line - 1])
    return "\n".join(lines) + "\n"


CSV_ERRORS = {
    "missing-column": (lambda l: l.rsplit(",", 1)[0], "line 5 has 784 columns, expected 785"),
    "extra-column": (lambda l: l + ",0", "line 5 has 786 columns, expected 785"),
    "non-integer-pixel": (lambda l: l[: l.rindex(",")] + ",12.5", "non-integer value"),
    "non-integer-label": (lambda l: "seven" + l[l.index(",") :], "non-integer value"),
    "empty-cell": (lambda l: l[: l.rindex(",")] + ",", "non-integer value"),
    "comment-mark": (lambda l: "#" + l, "non-integer value"),
    "pixel-256": (lambda l: l[: l.rindex(",")] + ",256", "pixel 256 at line 5, column 785 is outside 0-255"),
    "pixel-negative": (
        lambda l: l.split(",", 1)[0] + ",-1," + l.split(",", 2)[2],
        "pixel -1 at line 5, column 2 is outside 0-255",
    ),
    "label-10": (lambda l: "10" + l[l.index(",") :], "label 10 at line 5 is outside 0-9"),
    "label-negative": (lambda l: "-3" + l[l.index(",") :], "label -3 at line 5 is outside 0-9"),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_malformed_csv_row_is_refused_naming_file_and_problem(small, tmp_path, case):
    edit, expected = CSV_ERRORS[case]
    train_csv, test_csv = small.write_csv(tmp_path)
    train_csv.write_text(_csv_with(small, 5, edit))
    source = Source("csv", (str(train_csv), str(test_csv)))
    with pytest.raises(UserError) as exc:
        source.load_split("train")
    assert_one_line(exc, str(train_csv), expected)
    assert_split_equals(source.load_split("test"), small.arrays["test_images"], small.arrays["test_labels"])


def test_csv_line_numbers_count_the_header(small):
    text = small.csv_text(small.arrays["train_images"], small.arrays["train_labels"], header=True)
    lines = text.splitlines()
    lines[3] = "11" + lines[3][lines[3].index(",") :]  # third data row, fourth line of the file
    with pytest.raises(UserError) as exc:
        read_csv("\n".join(lines).encode(), "h.csv")
    assert_one_line(exc, "h.csv", "label 11 at line 4 is outside 0-9")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \r\n"], ids=["empty", "newlines", "blank"])
def test_empty_csv_file_is_refused(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(UserError) as exc:
        Source("csv", (str(path), str(path))).load_split("train")
    assert_one_line(exc, str(path), "empty file")


def test_csv_with_only_a_header_is_refused():
    with pytest.raises(UserError) as exc:
        read_csv(("label," + ",".join(f"p{i}" for i in range(784)) + "\n").encode(), "h.csv")
    assert_one_line(exc, "h.csv", "header only, no data rows")


def test_binary_file_given_as_csv_is_refused(mnist_dir):
    path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(UserError) as exc:
        read_csv(path.read_bytes(), str(path))
    assert_one_line(exc, str(path), "not a text CSV file")


def test_gzipped_csv_is_refused_not_misread():
    with pytest.raises(UserError) as exc:
        read_csv(gzip.compress((ROW + "\n").encode()), "train.csv.gz")
    assert_one_line(exc, "train.csv.gz")


def test_missing_csv_file_is_refused(tmp_path):
    missing = tmp_path / "nope.csv"
    source = Source("csv", (str(missing), str(missing)))
    with pytest.raises(UserError) as exc:
        source.load_split("test")
    assert_one_line(exc, str(missing), "no such file")
    with pytest.raises(UserError) as exc:
        source.input_checksums()
    assert_one_line(exc, str(missing), "no such file")


def test_folder_given_as_csv_file_is_refused(tmp_path):
    with pytest.raises(UserError) as exc:
        Source("csv", (str(tmp_path), str(tmp_path))).load_split("train")
    assert_one_line(exc, str(tmp_path), "is a folder")


def test_csv_first_row_with_a_fractional_label_is_an_error_not_a_header():
    from mnist_dask.data.sources import read_csv

    row = "1.5," + ",".join(["0"] * 784)
    with pytest.raises(UserError, match="rows.csv: non-integer value"):
        read_csv((row + "\n" + row + "\n").encode(), "rows.csv")
