"""Every command on an S3 store: a real S3-compatible server (moto) on 127.0.0.1, real s3fs I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs
from distributed import LocalCluster
from support import moto_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free loopback port, with one empty bucket."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=600)


def test_ingest_transform_run_info_and_verify_on_s3(endpoint, scheduler, mnist_dir, tmp_path):
    store = [
        "--store",
        "s3://study/mnist.zarr",
        "--storage-option",
        f"endpoint_url={endpoint}",
        "--storage-option",
        "key=k",
        "--storage-option",
        "secret=s",
    ]
    cluster = ["--scheduler", scheduler]

    ingested = _cli("ingest", "--source", f"idx:{mnist_dir}", *store, *cluster)
    assert ingested.returncode == 0, ingested.stderr
    fs = s3fs.S3FileSystem(key="k", secret="s", endpoint_url=endpoint, skip_instance_cache=True)
    assert fs.exists("study/mnist.zarr/raw/train/images/zarr.json")

    transformed = _cli("transform", "downscale", *store, *cluster)
    assert transformed.returncode == 0, transformed.stderr

    run = _cli("run", str(REPO / "jobs" / "knn_downscaled.toml"), *store, *cluster, "--run-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "transform downscale: skipped" in run.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert round(result["metrics"]["test_accuracy"], 4) == 0.9676
    assert result["store"] == "s3://study/mnist.zarr"

    info = _cli("info", "--json", *store)
    assert info.returncode == 0, info.stderr
    stages = json.loads(info.stdout)["stages"]
    assert stages["raw"]["complete"] and stages["derived/down10"]["complete"]

    verified = _cli("verify", *store, *cluster)
    assert verified.returncode == 0, verified.stderr
    assert "chunks match their recorded checksums" in verified.stdout


def test_missing_bucket_is_a_one_line_user_error(endpoint):
    done = _cli(
        "info",
        "--store",
        "s3://no-such-bucket/mnist.zarr",
        "--storage-option",
        f"endpoint_url={endpoint}",
        "--storage-option",
        "key=k",
        "--storage-option",
        "secret=s",
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mnist-dask: error: s3://no-such-bucket/mnist.zarr: no Zarr store here (run 'mnist-dask ingest' first)"
    ]


def test_foreign_stores_damaged_chunks_and_drop_on_s3(endpoint, scheduler, tmp_path):
    import numpy as np
    import zarr
    from distributed import Client
    from store_damage import balanced_small_mnist

    from mnist_dask.data.ingest import ingest
    from mnist_dask.data.sources import Source
    from mnist_dask.data.store import Store
    from mnist_dask.errors import UserError

    options = {"endpoint_url": endpoint, "key": "k", "secret": "s"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    zarr.open_group("s3://study/other.zarr", mode="w", storage_options=options).create_array(
        "raw/train/images", shape=(3,), dtype="i4"
    )[:] = 7
    before = sorted(fs.find("study/other.zarr"))
    with pytest.raises(UserError, match="is a Zarr store that mnist-dask did not create"):
        Store("s3://study/other.zarr", options).begin_stage("raw")
    assert sorted(fs.find("study/other.zarr")) == before

    small = balanced_small_mnist()
    folder = small.write_idx(tmp_path / "idx")
    store = Store("s3://study/small.zarr", options)
    with Client(scheduler) as client:
        ingest(Source("idx", (str(folder),)), store, client, chunk_size=16)
        assert np.array_equal(client.compute(store.read("raw/test/images"), sync=True), small.arrays["test_images"])
        fs.rm("study/small.zarr/raw/test/images/c/1/0/0")
        with pytest.raises(UserError, match=r"small.zarr/raw/test/images/c/1/0/0: chunk 1.0.0 of raw/test/images"):
            client.compute(Store("s3://study/small.zarr", options).read("raw/test/images"), sync=True)
    assert store.drop_stage("raw") == ["raw"]
    assert not fs.exists("study/small.zarr/raw/zarr.json") and store.stages() == []
