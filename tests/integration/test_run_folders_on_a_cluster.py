"""A run on an existing cluster whose workers started in another folder: relative folders mean the
user's folder, and predictions the driver cannot see are an error, never zeros."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from sklearn.neighbors import KNeighborsClassifier
from store_damage import assert_user_error, cli
from support import DaskProcesses

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "knn_baseline.toml"


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workers-folder")


@pytest.fixture(scope="module")
def cluster(elsewhere):
    """A real scheduler and two workers started in a folder of their own."""
    processes = DaskProcesses(cwd=elsewhere)
    try:
        yield processes
    finally:
        processes.close()


def test_relative_store_and_run_folder_mean_the_users_folder_not_the_workers(small, cluster, elsewhere, tmp_path):
    source = small.write_idx(tmp_path / "idx")
    here = tmp_path / "here"
    here.mkdir()

    done = cli(
        "run",
        JOB,
        "--source",
        f"idx:{source}",
        "--store",
        "s.zarr",
        "--run-dir",
        "out",
        "--scheduler",
        cluster.address,
        cwd=here,
    )

    assert done.returncode == 0, done.stderr
    a = small.arrays
    expected = KNeighborsClassifier(n_neighbors=5).fit(a["train_images"].reshape(40, -1), a["train_labels"])
    want = expected.predict(a["test_images"].reshape(20, -1))
    got = zarr.open_array(str(here / "out" / "predictions.zarr"), path="predicted", mode="r")[:]
    np.testing.assert_array_equal(got, want)
    accuracy = json.loads((here / "out" / "result.json").read_text())["metrics"]["test_accuracy"]
    assert accuracy == pytest.approx(np.mean(want == a["test_labels"]))
    assert not list(elsewhere.iterdir()), "the workers wrote into their own folder"


def test_predictions_the_workers_wrote_to_a_disk_of_their_own_fail_in_one_line(small, tmp_path):
    """Workers on other machines write the run folder's predictions to their own disks. Here the workers run in
    a mount namespace where a tmpfs covers the run folder; the driver must not read the chunks it lacks as zeros."""
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the workers a disk of their own (the CI machine has both)")
    hide = ("unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(out))
    cluster = DaskProcesses(worker_prefix=hide)
    try:
        done = cli(
            "run",
            JOB,
            "--source",
            f"idx:{small.write_idx(tmp_path / 'idx')}",
            "--store",
            tmp_path / "s.zarr",
            "--run-dir",
            out,
            "--scheduler",
            cluster.address,
            cwd=tmp_path,
        )
    finally:
        cluster.close()
    line = assert_user_error(
        done, f"{out / '.pending' / 'predictions.zarr'}: ", "chunks the workers wrote", "--run-dir", only_line=False
    )
    assert "1 of 1 chunks" in line, line
    assert not (out / "result.json").exists()
