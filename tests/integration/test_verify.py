"""``mnist-dask verify``: recorded chunk checksums are recomputed and a flipped byte is named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from distributed import Client, LocalCluster

from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source
from mnist_dask.data.stages import CHUNK_MD5_KEY, block_md5
from mnist_dask.data.store import Store


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, cluster, mnist_dir) -> Path:
    path = tmp_path_factory.mktemp("verify") / "mnist.zarr"
    with Client(cluster) as client:
        ingest(Source("idx", (str(mnist_dir),)), Store(str(path)), client)
    return path


def _verify(path: Path, cluster) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", "verify", str(path), "--scheduler", cluster.scheduler_address],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ingest_records_one_checksum_per_chunk_matching_the_data(pristine, mnist):
    images = zarr.open_group(str(pristine), mode="r")["raw/train/images"]
    recorded = images.attrs[CHUNK_MD5_KEY]
    assert len(recorded) == 12
    assert recorded[3] == block_md5(mnist["train_images"][15_000:20_000])


def test_verify_passes_on_an_intact_store(pristine, cluster):
    done = _verify(pristine, cluster)
    assert done.returncode == 0, done.stderr
    assert "all 28 chunks match" in done.stdout


def test_verify_names_the_chunk_with_a_flipped_byte(pristine, cluster, tmp_path):
    copy = tmp_path / "mnist.zarr"
    shutil.copytree(pristine, copy)
    chunk = copy / "raw" / "train" / "images" / "c" / "3" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))

    done = _verify(copy, cluster)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "raw/train/images chunk 3.0.0 (rows 15000-19999): checksum mismatch"
    ] or done.stdout.splitlines()[0].startswith("raw/train/images chunk 3.0.0 (rows 15000-19999): error")
    errors = [line for line in done.stderr.splitlines() if line.startswith("mnist-dask: error:")]
    assert errors == [f"mnist-dask: error: {copy}: 1 problem(s) found in 28 chunks checked (listed above)"]
    assert "Traceback" not in done.stderr


def test_verify_reports_a_truncated_chunk_file_as_undecodable(pristine, cluster, tmp_path):
    copy = tmp_path / "mnist.zarr"
    shutil.copytree(pristine, copy)
    chunk = copy / "raw" / "test" / "images" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])

    done = _verify(copy, cluster)
    assert done.returncode == 2
    assert done.stdout.startswith("raw/test/images chunk 1.0.0 (rows 5000-9999): ")
