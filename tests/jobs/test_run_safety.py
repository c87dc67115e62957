"""Runs never share a run folder, and a bad job parameter stops a run before it starts.

A run holds its folder with an OS lock for its duration (released however the process
ends); a second run of the same folder fails with one line naming the folder and the run
holding it, touching nothing in it. CLI cases run ``mnist-dask run`` as a subprocess on
its default path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from store_damage import assert_user_error, balanced_small_mnist, cli, snapshot
from support import SmallMnist

from mnist_dask.errors import UserError
from mnist_dask.jobs.records import RunStatus, check_own_folder, read_status, runs_root, study_root
from mnist_dask.jobs.run_lock import LOCK_NAME, run_folder_lock


@pytest.mark.parametrize(
    ("store", "runs"),
    [
        ("storage/mnist.zarr", Path("storage/runs")),
        ("file:///data/mnist.zarr", Path("/data/runs")),
        ("~/mnist.zarr", Path.home() / "runs"),  # $MNIST_DASK_STORE=~/...: no folder named '~' in the working one
        ("s3://bucket/mnist.zarr", Path("storage/runs")),
        ("storage/fashion.zarr", Path("storage/runs-fashion")),  # another store: its own runs, not mnist.zarr's
        ("storage/fashion.zarr/", Path("storage/runs-fashion")),
        ("file:///data/fashion", Path("/data/runs-fashion")),
        ("s3://bucket/fashion.zarr/", Path("storage/runs-fashion")),
        ("s3://bucket/mnist.zarr/", Path("storage/runs")),
    ],
)
def test_run_and_study_folders_are_the_stores_own_beside_a_local_store_else_under_storage(store, runs):
    assert runs_root(store) == runs
    assert study_root(store) == runs.parent / runs.name.replace("runs", "study", 1)


def test_cli_the_same_job_on_two_stores_in_one_folder_keeps_both_runs_each_listed_with_its_store(small, tmp_path):
    """``run`` on storage/fashion.zarr replaced the storage/mnist.zarr run's result in the one shared storage/runs,
    and ``runs``/``status`` mixed the two stores' runs; the default store's runs/ is unchanged (a study's folders:
    tests/integration/test_study_command.py)."""
    job = tmp_path / "tiny.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n")
    stores = {"runs": "storage/mnist.zarr", "runs-fashion": "storage/fashion.zarr"}  # as typed, in tmp_path
    for seed, (runs, store) in enumerate(stores.items()):
        source = type(small)(seed=seed).write_idx(tmp_path / f"idx-{seed}")
        done = cli("run", job, "--store", store, "--source", f"idx:{source}", "--workers", 1, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.rstrip().endswith(f"results in storage/{runs}/tiny/result.json")
    for runs, store in stores.items():
        result = json.loads((tmp_path / "storage" / runs / "tiny" / "result.json").read_text())
        assert Path(result["store"]) == tmp_path / store
        listed = cli("runs", "--store", store, "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert [(r["run_dir"], r["test_accuracy"]) for r in json.loads(listed.stdout)] == [
            (str(tmp_path / "storage" / runs / "tiny"), result["metrics"]["test_accuracy"])
        ]
        shown = json.loads(cli("status", "tiny", "--store", store, "--json", cwd=tmp_path).stdout)
        assert shown["run_dir"] == str(tmp_path / "storage" / runs / "tiny")
    assert sorted(path.name for path in (tmp_path / "storage").iterdir()) == [
        "fashion.zarr", "mnist.zarr", "runs", "runs-fashion"
    ]  # fmt: skip


def test_an_output_folder_is_new_empty_or_an_earlier_runs_never_the_users(tmp_path):
    check_own_folder(tmp_path / "new", "--run-dir")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / LOCK_NAME).touch()  # all a run killed at its very start leaves
    check_own_folder(crashed, "--run-dir")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own page")
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(UserError) as exc:
        check_own_folder(mine, "--study-dir", "study.json")
    assert str(exc.value) == (
        f"{mine}: holds other files (notes.txt and 1 more) and no earlier run's; "
        "pass a new or empty folder to --study-dir"
    )
    (mine / "status.json.part").write_text("{")  # a run killed while writing its first record
    check_own_folder(mine, "--run-dir")
    (mine / "status.json.part").unlink()
    (mine / "study.json").write_text("{}")  # an earlier study's folder
    check_own_folder(mine, "--study-dir", "study.json")
    (mine / "study.json").unlink()
    (mine / "status.json").write_text("{}")  # an earlier run's folder
    check_own_folder(mine, "--run-dir")


def test_ctrl_c_is_recorded_as_interrupted_during_or_after_a_stage_without_a_traceback(tmp_path):
    status = RunStatus(tmp_path, "r1", "knn_baseline")
    status.running()
    errors = []
    for step in (lambda: None, lambda: status.stage("predict"), lambda: status.stage_done("predict", 1.0)):
        step()
        status.failed(KeyboardInterrupt())
        record = read_status(tmp_path)
        assert record["state"] == "failed" and record["traceback_tail"] == ""
        errors.append(record["error"])
    assert errors == ["interrupted", "interrupted during predict", "interrupted after predict"]


def test_a_held_run_folder_refuses_a_second_run_naming_the_holder(tmp_path):
    with run_folder_lock(tmp_path, "first"):
        with pytest.raises(UserError) as exc:
            with run_folder_lock(tmp_path, "second"):
                pass
        message = str(exc.value)
        assert message.startswith(f"{tmp_path}: in use by a running run of job first (pid {os.getpid()} on ")
        assert socket.gethostname() in message and "--run-dir" in message and "\n" not in message
    with run_folder_lock(tmp_path, "third"):  # released: free again
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_run_killed_while_holding_its_folder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from mnist_dask.jobs.run_lock import run_folder_lock
                with run_folder_lock(Path({str(tmp_path)!r}), "doomed"):
                    print("held", flush=True)
                    time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="in use by a running run of job doomed"):
            with run_folder_lock(tmp_path, "second"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by the killed run, but no longer locked
    with run_folder_lock(tmp_path, "after"):
        pass


def test_cli_run_into_a_folder_another_run_holds_fails_in_one_line_and_touches_nothing(tmp_path):
    folder = balanced_small_mnist().write_idx(tmp_path / "idx")
    job = tmp_path / "tiny.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text('{"state": "running"}')
    with run_folder_lock(run_dir, "tiny"):
        before = snapshot(run_dir)
        done = cli(
            "run", job, "--source", f"idx:{folder}", "--store", tmp_path / "s.zarr", "--run-dir", run_dir,
            "--workers", 1, cwd=tmp_path,
        )  # fmt: skip
        after = snapshot(run_dir)
    assert_user_error(done, f"{run_dir}: in use by a running run of job tiny (pid {os.getpid()}")
    assert after == before


def test_cli_run_folder_under_a_tilde_is_in_home_and_a_url_is_refused(tmp_path, monkeypatch):
    """``--run-dir '~/r'`` (a tilde the shell left alone) means home, as for --store; it made a folder named '~'."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    folder = balanced_small_mnist().write_idx(tmp_path / "idx")
    job = tmp_path / "tiny.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n")
    store = tmp_path / "s.zarr"
    done = cli(
        "run", job, "--source", f"idx:{folder}", "--store", store, "--run-dir", "~/r", "--workers", 1, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (home / "r" / "result.json").is_file() and not (tmp_path / "~").exists()
    refused = cli("run", job, "--store", store, "--run-dir", "s3://bucket/r", cwd=tmp_path)
    assert_user_error(refused, "--run-dir: s3://bucket/r: a folder on this machine is needed here, not a URL")


def test_cli_run_with_a_negative_sample_fails_before_anything_starts(tmp_path):
    job = tmp_path / "svm.toml"
    job.write_text("experiment = 'svm_kernels'\n[params]\nsample = -5\n")
    done = cli("run", job, "--store", tmp_path / "s.zarr", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(done, f"{job}: params.sample: Input should be greater than or equal to 0 (got -5)")
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "run").exists()


TINY_KNN = "experiment = 'knn'\n[params.model]\nn_neighbors = 1\n"


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a store ``s.zarr`` (40 balanced training images) and the finished run of a 1-NN job in ``run``,
    made once through the CLI on the default local cluster; tests rerun into copies of it."""
    base = tmp_path_factory.mktemp("finished")
    folder = balanced_small_mnist().write_idx(base / "idx")
    job = base / "tiny.toml"
    job.write_text(TINY_KNN)
    args = ("--store", base / "s.zarr", "--run-dir", base / "run", "--workers", 1)
    finished = cli("run", job, "--source", f"idx:{folder}", *args, cwd=base)
    assert finished.returncode == 0, finished.stderr
    return base


def _copy_of_a_finished_run(finished: Path, tmp_path: Path) -> tuple[Path, Path, tuple[object, ...]]:
    """The finished run and its store copied into ``tmp_path``: its job file, run folder and the options to rerun."""
    shutil.copytree(finished / "s.zarr", tmp_path / "s.zarr")
    shutil.copytree(finished / "run", tmp_path / "run")
    job = tmp_path / "tiny.toml"
    job.write_text(TINY_KNN)
    return job, tmp_path / "run", ("--store", tmp_path / "s.zarr", "--run-dir", tmp_path / "run", "--workers", 1)


def test_cli_rerun_that_fails_keeps_the_previous_finished_runs_results(finished_tiny_run, tmp_path):
    """A rerun into a finished run's folder removed its result.json, report.html and predictions.zarr before it
    failed; now a run's outputs replace the earlier ones only once it has finished, and a failed one says so."""
    job, run_dir, args = _copy_of_a_finished_run(finished_tiny_run, tmp_path)
    outputs = ("result.json", "report.html", "predictions.zarr")
    assert all((run_dir / name).exists() for name in outputs)
    before = {path: data for path, data in snapshot(run_dir).items() if path.split("/")[0] in outputs}

    # 5 stratified folds of 4 images per digit: valid on load, fails only once the search starts
    job.write_text("experiment = 'knn'\n[params.search]\ncv = 5\n[params.search.param_grid]\nn_neighbors = [1]\n")
    failed = cli("run", job, *args, cwd=tmp_path)
    assert_user_error(failed, "params.search.cv = 5: stratified folds need", only_line=False)
    assert f"the previous finished run's results in {run_dir} are kept" in failed.stderr
    after = {path: data for path, data in snapshot(run_dir).items() if path.split("/")[0] in outputs}
    assert after == before
    assert not (run_dir / ".pending").exists()
    assert read_status(run_dir)["state"] == "failed"

    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 3\n")  # a rerun that finishes replaces them
    again = cli("run", job, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "result.json").read_text())["model"]["n_neighbors"] == 3
    assert not (run_dir / ".pending").exists() and read_status(run_dir)["state"] == "finished"


@pytest.mark.parametrize(
    ("rerun", "problem"),
    [
        (
            "experiment = 'knn'\n[params.model]\nn_neighbors = 41\n",
            "params.model.n_neighbors = 41: more neighbours than the 40 training rows of raw",
        ),
        (
            "experiment = 'knn'\n[params]\nsteps = [{ transform = 'sample', train = 41 }]\n",
            "params.steps[0].train = 41: more than the 40 training rows of raw",
        ),
        (
            "experiment = 'knn'\n[params]\nsteps = [{ transform = 'shift' }, { transform = 'sample', train = 201 }]\n",
            "params.steps[1].train = 201: more than the 200 training rows of derived/shift5x",
        ),
        (
            "experiment = 'knn'\n[params]\nsteps = [{ transform = 'rotate' }]\n[params.model]\nn_neighbors = 121\n",
            "params.model.n_neighbors = 121: more neighbours than the 120 training rows of derived/rot10x3",
        ),
        (
            "experiment = 'knn_best'\n[params]\ntrain_sample = 41\n",
            "params.train_sample = 41: more than the 40 training rows of raw",
        ),
        (
            "experiment = 'svm_kernels'\n[params]\nsample = 41\n",
            "params.sample = 41: more than the 40 training rows of raw",
        ),
    ],
    ids=[
        "n_neighbors",
        "sample-train",
        "sample-after-shift",
        "k-after-rotate",
        "knn_best-train_sample",
        "svm_kernels-sample",
    ],
)
def test_cli_rerun_with_a_parameter_the_stores_rows_rule_out_fails_before_anything_starts(
    finished_tiny_run, tmp_path, rerun, problem
):
    """More neighbours, or a larger sample, than the store's training rows failed only after the cluster started
    and ingest ran, and the sample's error named neither the job file nor the key; now one line naming both,
    before a cluster starts, the finished run's folder untouched. The rows are counted through the steps that
    add rows (a shift of radius 1: 5x, a rotate: 3x), and knn_best's own sample is checked the same way, as are the
    first rows the scikit-learn experiments take (svm_kernels used the 40 there were, its note saying 41)."""
    job, run_dir, args = _copy_of_a_finished_run(finished_tiny_run, tmp_path)
    before = snapshot(run_dir)
    job.write_text(rerun)
    failed = cli("run", job, *args, cwd=tmp_path)
    assert_user_error(failed, f"{job}: {problem}")  # the only line: no cluster started, no stage ran
    assert snapshot(run_dir) == before


def test_cli_run_sent_sigterm_records_that_it_was_terminated(tmp_path):
    """``kill PID`` on ``mnist-dask run`` left its status.json saying 'running' for good (``runs`` guessed 'lost'
    from the pid); now the run records its end as Ctrl-C does, and the command exits 143 in one line."""
    folder = SmallMnist(n_train=20_000, n_test=5_000).write_idx(tmp_path / "idx", gz=False)  # seconds of work
    job = tmp_path / "tiny.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n")
    run_dir = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if key not in ("DASK_SCHEDULER_ADDRESS", "MNIST_DASK_STORE")}
    command = [sys.executable, "-m", "mnist_dask", "run", str(job), "--source", f"idx:{folder}"]
    command += ["--store", str(tmp_path / "s.zarr"), "--run-dir", str(run_dir), "--workers", "1"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while '"running"' not in _text(run_dir / "status.json") and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143 and stderr.rstrip().endswith("mnist-dask: terminated"), stderr
    assert "Traceback" not in stderr, stderr
    record = read_status(run_dir)
    assert record["state"] == "failed" and record["error"].startswith("terminated (SIGTERM)"), record
    assert not (run_dir / "result.json").exists() and not (run_dir / ".pending").exists()


def _text(path: Path) -> str:
    """A file's text, or '' while it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
