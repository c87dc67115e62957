"""Through the CLI on a small store: damaged stores give exact results or one line; two runs never share a folder.

Every command runs as a subprocess on its default path (its own one-worker LocalCluster).
For each kind of damage, ``info``, ``verify`` and ``run`` either succeed with the original
result or fail with one ``mnist-dask: error:`` line, and the store is left as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from store_damage import assert_user_error, balanced_small_mnist, cli, damage, snapshot

pytestmark = pytest.mark.integration

JOB = "experiment = 'knn'\n[params.model]\nn_neighbors = 1\n"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A complete small store made by ``ingest`` (chunks of 16 rows), a job file, and the job's result on it."""
    base = tmp_path_factory.mktemp("pristine")
    folder = balanced_small_mnist().write_idx(base / "idx")
    store = base / "mnist.zarr"
    done = cli("ingest", "--source", f"idx:{folder}", "--store", store, "--chunk-size", 16, "--workers", 1, cwd=base)
    assert done.returncode == 0, done.stderr
    job = base / "tiny.toml"
    job.write_text(JOB)
    done = cli("run", job, "--store", store, "--run-dir", base / "run", "--workers", 1, cwd=base)
    assert done.returncode == 0, done.stderr
    return store, job, json.loads((base / "run" / "result.json").read_text())


DAMAGE = {
    "deleted-chunk": ("raw/train/images/c/1/0/0", "delete", "chunk 1.0.0 of raw/train/images (rows 16-31) differs"),
    "flipped-byte": ("raw/test/images/c/0/0/0", "flip_byte", "chunk 0.0.0 of raw/test/images (rows 0-15) differs"),
    "truncated-chunk": ("raw/train/labels/c/2", "truncate", "chunk 2 of raw/train/labels (rows 32-39) cannot be"),
    "garbled-array-metadata": ("raw/test/labels/zarr.json", "garble", "raw/test/labels/zarr.json: corrupt Zarr"),
    "garbled-stage-metadata": ("raw/zarr.json", "garble", "raw/zarr.json: corrupt Zarr metadata"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_info_verify_and_run_on_a_damaged_store_fail_in_one_line_and_change_nothing(pristine, tmp_path, case):
    store, job, _ = pristine
    copy = tmp_path / "mnist.zarr"
    shutil.copytree(store, copy)
    file, how, message = DAMAGE[case]
    damage(copy / file, how, position=100, value=0x5A)
    before = snapshot(copy)

    info = cli("info", copy, cwd=tmp_path)
    if info.returncode != 0:  # metadata damage is named by info; chunk damage is not info's business
        assert_user_error(info, message)
    verify = cli("verify", copy, "--workers", 1, cwd=tmp_path)
    assert verify.returncode == 2 and "Traceback" not in verify.stderr
    run = cli("run", job, "--store", copy, "--run-dir", tmp_path / "run", "--workers", 1, cwd=tmp_path)
    assert snapshot(copy) == before
    if how == "garble":  # raw's metadata is read before the run starts (the job's row checks): refused, no record
        assert_user_error(run, f"{copy}/", message)
        assert not (tmp_path / "run" / "status.json").exists()
    else:  # chunk damage is met by the run's work: it records how it failed
        assert_user_error(run, f"{copy}/", message, only_line=False)
        assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_a_deleted_stage_metadata_file_is_re_ingested_and_the_run_gives_the_original_result(pristine, tmp_path):
    store, job, original = pristine
    copy = tmp_path / "mnist.zarr"
    shutil.copytree(store, copy)
    (copy / "raw" / "zarr.json").unlink()  # the stage no longer exists: run ingests it again from the source
    source = json.loads((store / "raw" / "zarr.json").read_text())["attributes"]["mnist_dask"]["provenance"]["source"]
    done = cli(
        "run", job, "--store", copy, "--source", source, "--run-dir", tmp_path / "run", "--workers", 1, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["metrics"] == original["metrics"]


def test_two_runs_of_one_folder_at_once_one_fails_in_one_line_the_other_finishes(pristine, tmp_path):
    store, job, original = pristine
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mnist_dask", "run", str(job), "--store", str(store), "--run-dir", str(run_dir)]
    runs = [
        subprocess.Popen([*command, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    done = [subprocess.CompletedProcess(run.args, run.returncode, out, err) for run, (out, err) in zip(runs, outputs)]
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr for d in done]
    winner, loser = (runs[0], done[1]) if done[0].returncode == 0 else (runs[1], done[0])
    assert_user_error(loser, f"{run_dir}: in use by a running run of job tiny (pid {winner.pid} on ")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"] == original["metrics"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
