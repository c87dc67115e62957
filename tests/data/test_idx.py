"""Tests for mnist_dask.data.idx: parsing and validating IDX files, gzipped or plain.

Inputs are small IDX files written byte by byte (struct + gzip) and the real MNIST files.
Every malformed input must become a one-line UserError that names the file.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_dask.data import idx
from mnist_dask.data.sources import read_csv
from mnist_dask.errors import UserError

NAME = "/data/some-dir/train-images-idx3-ubyte.gz"


def assert_user_error(exc: pytest.ExceptionInfo, name: str, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    assert name in message, message
    for fragment in fragments:
        assert fragment in message, message


# -- valid files ------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_valid_images_parse_to_the_written_array(small, gz):
    images = small.arrays["train_images"]
    parsed = idx.parse_images(small.images_bytes(images, gz=gz), NAME)
    assert parsed.dtype == np.uint8
    assert parsed.shape == (40, 28, 28)
    np.testing.assert_array_equal(parsed, images)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_valid_labels_parse_to_the_written_array(small, gz):
    labels = small.arrays["train_labels"]
    parsed = idx.parse_labels(small.labels_bytes(labels, gz=gz), "labels.idx")
    assert parsed.dtype == np.uint8
    assert parsed.shape == (40,)
    np.testing.assert_array_equal(parsed, labels)


def test_zero_image_file_is_refused(small):
    with pytest.raises(UserError) as exc:
        idx.parse_images(small.images_bytes(np.zeros((0, 28, 28), np.uint8)), NAME)
    assert_user_error(exc, NAME, "holds 0 images")


def test_zero_label_file_is_refused(small):
    with pytest.raises(UserError) as exc:
        idx.parse_labels(small.labels_bytes(np.zeros(0, np.uint8), gz=True), "labels.gz")
    assert_user_error(exc, "labels.gz", "holds 0 labels")


def test_real_mnist_test_files_parse_to_the_fixture_arrays(mnist_dir, mnist):
    images_path = mnist_dir / "t10k-images-idx3-ubyte.gz"
    labels_path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    images = idx.parse_images(images_path.read_bytes(), str(images_path))
    labels = idx.parse_labels(labels_path.read_bytes(), str(labels_path))
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    np.testing.assert_array_equal(images, mnist["test_images"])
    np.testing.assert_array_equal(labels, mnist["test_labels"])
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# -- malformed files --------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_images_with_wrong_magic_are_refused(small, gz):
    raw = small.images_bytes(small.arrays["train_images"], magic=0x801, gz=gz)
    with pytest.raises(UserError) as exc:
        idx.parse_images(raw, NAME)
    assert_user_error(exc, NAME, "wrong IDX magic number 0x00000801", "expected 0x00000803")


def test_labels_with_wrong_magic_are_refused(small):
    raw = small.labels_bytes(small.arrays["train_labels"], magic=0x12345678)
    with pytest.raises(UserError) as exc:
        idx.parse_labels(raw, "labels.idx")
    assert_user_error(exc, "labels.idx", "wrong IDX magic number 0x12345678", "expected 0x00000801")


def test_an_image_file_given_as_labels_is_refused_by_its_magic(small):
    raw = small.images_bytes(small.arrays["train_images"], gz=True)
    with pytest.raises(UserError) as exc:
        idx.parse_labels(raw, NAME)
    assert_user_error(exc, NAME, "wrong IDX magic number 0x00000803")


@pytest.mark.parametrize("keep", [0.5, 0.9, 12 / 1000], ids=["half", "most", "header-only"])
def test_truncated_gzip_is_refused(small, keep):
    raw = small.images_bytes(small.arrays["train_images"], gz=True)
    cut = raw[: max(3, int(len(raw) * keep))]
    with pytest.raises(UserError) as exc:
        idx.parse_images(cut, NAME)
    assert_user_error(exc, NAME, "truncated or corrupt gzip data")


def test_gzip_with_corrupted_payload_is_refused(small):
    raw = bytearray(small.labels_bytes(small.arrays["train_labels"], gz=True))
    raw[-8] ^= 0xFF  # the CRC32 of the payload
    with pytest.raises(UserError) as exc:
        idx.parse_labels(bytes(raw), "labels.gz")
    assert_user_error(exc, "labels.gz", "truncated or corrupt gzip data")


@pytest.mark.parametrize("n_header", [39, 41, 0, 2**32 - 1])
def test_image_count_in_header_disagreeing_with_data_is_refused(small, n_header):
    images = small.arrays["train_images"]  # 40 images of 784 bytes
    raw = small.images_bytes(images, dims=(n_header, 28, 28), gz=True)
    with pytest.raises(UserError) as exc:
        idx.parse_images(raw, NAME)
    assert_user_error(exc, NAME, f"header sizes promise {n_header * 784} data bytes but the file holds {40 * 784}")


def test_image_data_shorter_than_the_header_promises_is_refused(small):
    raw = small.images_bytes(small.arrays["train_images"])[:-100]
    with pytest.raises(UserError) as exc:
        idx.parse_images(raw, NAME)
    assert_user_error(exc, NAME, f"promise {40 * 784} data bytes but the file holds {40 * 784 - 100}")


@pytest.mark.parametrize("n_header", [39, 41])
def test_label_count_in_header_disagreeing_with_data_is_refused(small, n_header):
    raw = small.labels_bytes(small.arrays["train_labels"], n=n_header)
    with pytest.raises(UserError) as exc:
        idx.parse_labels(raw, "labels.idx")
    assert_user_error(exc, "labels.idx", f"header sizes promise {n_header} data bytes but the file holds 40")


@pytest.mark.parametrize("rows, cols", [(20, 20), (28, 27), (32, 32), (784, 1)])
def test_images_that_are_not_28x28_are_refused(rows, cols):
    images = np.zeros((5, rows, cols), np.uint8)
    raw = struct.pack(">IIII", 0x803, 5, rows, cols) + images.tobytes()
    with pytest.raises(UserError) as exc:
        idx.parse_images(raw, NAME)
    assert_user_error(exc, NAME, f"images are {rows}x{cols}, expected 28x28")


@pytest.mark.parametrize("parse", [idx.parse_images, idx.parse_labels], ids=["images", "labels"])
def test_empty_file_is_refused(parse):
    with pytest.raises(UserError) as exc:
        parse(b"", "empty.idx")
    assert_user_error(exc, "empty.idx", "empty file")


@pytest.mark.parametrize("parse", [idx.parse_images, idx.parse_labels], ids=["images", "labels"])
def test_gzip_of_nothing_is_refused_as_empty(parse):
    with pytest.raises(UserError) as exc:
        parse(gzip.compress(b""), "empty.gz")
    assert_user_error(exc, "empty.gz", "empty file")


@pytest.mark.parametrize("length", [1, 4, 15])
def test_file_shorter_than_an_idx_header_is_refused(length):
    raw = struct.pack(">IIII", 0x803, 1, 28, 28)[:length]
    with pytest.raises(UserError) as exc:
        idx.parse_images(raw, NAME)
    assert_user_error(exc, NAME, f"file is {length} bytes, too short for an IDX header")


@pytest.mark.parametrize("bad_label, row", [(10, 7), (255, 0), (42, 39)])
def test_label_outside_0_to_9_is_refused_naming_value_and_row(small, bad_label, row):
    labels = small.arrays["train_labels"].copy()
    labels[row] = bad_label
    with pytest.raises(UserError) as exc:
        idx.parse_labels(small.labels_bytes(labels, gz=True), "labels.gz")
    assert_user_error(exc, "labels.gz", f"label {bad_label} at row {row} is outside 0-9")


# -- property: any bytes give valid arrays or a UserError, never another exception -----------
def _check_images_outcome(raw: bytes) -> None:
    try:
        images = idx.parse_images(raw, "fuzz-images.idx")
    except UserError as exc:
        assert "fuzz-images.idx" in str(exc) and "\n" not in str(exc)
        return
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)


def _check_labels_outcome(raw: bytes) -> None:
    try:
        labels = idx.parse_labels(raw, "fuzz-labels.idx")
    except UserError as exc:
        assert "fuzz-labels.idx" in str(exc) and "\n" not in str(exc)
        return
    assert labels.dtype == np.uint8 and labels.ndim == 1
    assert labels.size == 0 or int(labels.max()) <= 9


def _check_csv_outcome(raw: bytes) -> None:
    try:
        images, labels = read_csv(raw, "fuzz.csv")
    except UserError as exc:
        assert "fuzz.csv" in str(exc) and "\n" not in str(exc)
        return
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (len(images),)
    assert len(images) >= 1 and int(labels.max()) <= 9


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
uint32 = st.integers(0, 2**32 - 1)
small_dims = st.sampled_from([0, 1, 2, 3, 27, 28, 29, 784]) | uint32


@FUZZ
@given(raw=st.binary(max_size=2000), gz=st.booleans())
def test_random_bytes_give_arrays_or_user_error(raw, gz):
    payload = gzip.compress(raw) if gz else raw
    _check_images_outcome(payload)
    _check_labels_outcome(payload)
    _check_csv_outcome(payload)


@FUZZ
@given(
    magic=st.sampled_from([0x803, 0x801, 0x802, 0x0803_0000]) | uint32,
    dims=st.tuples(small_dims, small_dims, small_dims),
    n_images=st.integers(0, 3),
    extra=st.integers(-900, 900),
    gz=st.booleans(),
    chop_gzip=st.integers(0, 30),
)
def test_mutated_image_headers_give_arrays_or_user_error(magic, dims, n_images, extra, gz, chop_gzip):
    data = bytes(range(256)) * 10
    body = data[: max(0, n_images * 784 + extra)]
    raw = struct.pack(">IIII", magic, *dims) + body
    if gz:
        raw = gzip.compress(raw)
        raw = raw[: len(raw) - chop_gzip] if chop_gzip else raw
    _check_images_outcome(raw)


@FUZZ
@given(
    magic=st.sampled_from([0x801, 0x803]) | uint32,
    n=st.sampled_from([0, 1, 5, 6]) | uint32,
    body=st.binary(max_size=8) | st.lists(st.integers(0, 9), max_size=8).map(bytes),
    gz=st.booleans(),
)
def test_mutated_label_headers_give_arrays_or_user_error(magic, n, body, gz):
    raw = struct.pack(">II", magic, n) + body
    _check_labels_outcome(gzip.compress(raw) if gz else raw)


CSV_TOKENS = st.sampled_from(
    [
        "",
        "0",
        "9",
        "10",
        "255",
        "256",
        "-1",
        "-0",
        "+3",
        "1.5",
        "x",
        " 7",
        "#",
        "# 2",
        "99999999999999999999",
        "\t",
        "label",
        "1e2",
        "nan",
    ]
)


@FUZZ
@given(
    rows=st.integers(1, 3),
    header=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 800), CSV_TOKENS), max_size=4),
    extra_lines=st.lists(st.sampled_from(["", ",", "#comment", "1,2,3", "\r"]), max_size=2),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_mutated_csv_gives_arrays_or_user_error(rows, header, edits, extra_lines, line_end):
    table = [["label"] + [f"p{i}" for i in range(784)]] if header else []
    table += [[str(r % 10)] + [str((r * 31 + i) % 256) for i in range(784)] for r in range(rows)]
    for row, col, token in edits:
        if row < len(table):
            cells = table[row]
            if col < len(cells):
                cells[col] = token
            else:
                cells.append(token)
    lines = [",".join(cells) for cells in table] + extra_lines
    _check_csv_outcome(line_end.join(lines).encode())
