"""What a user sees when things go right: quick --version/--help, ``dask mnist``, transform options with
help text, progress lines when stderr is not a terminal, a no-op ingest that starts no cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from user_errors import DASK_LOG_LINE, PROGRESS_LINE

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
HEAVY = ("dask", "distributed", "zarr", "numpy", "fsspec", "sklearn")


def _cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MNIST_DASK_SOURCE")}
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("ingest", "--help"), ("run", "--help")])
def test_version_and_help_load_no_dask(args):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY)
    assert heavy == [], heavy
    if args == ("--version",):
        assert re.fullmatch(r"mnist-dask \S+\n", done.stdout)


@pytest.mark.parametrize("command", ["ingest", "run", "study"])
def test_source_help_names_the_download_cache_variable(command):
    """--source may download: its help says where the files are kept and which variable moves them."""
    done = _cli(command, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split()).replace("- ", "-")  # click wraps lines, at hyphens too
    assert "$MNIST_DASK_CACHE (default ~/.cache/mnist-dask)" in text, text


def test_dask_mnist_is_the_same_cli_inside_dasks_own():
    listed = subprocess.run([BIN / "dask", "--help"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and re.search(r"^\s+mnist\s", listed.stdout, re.M), listed.stdout
    done = subprocess.run([BIN / "dask", "mnist", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: dask mnist")
    for name in ("ingest", "transform", "run", "submit", "status", "runs", "verify", "report", "classify", "info"):
        assert re.search(rf"^\s+{name}\s", done.stdout, re.M), name
    bad = subprocess.run(
        [BIN / "dask", "mnist", "ingest", "--workers", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("mnist-dask: error: --workers: 0 is not in the range 1<=x<=")
    assert len(bad.stderr.splitlines()) == 1


def test_transform_options_are_typed_and_explained():
    done = _cli("transform", "shift", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "PARAM_" not in done.stdout
    assert "--radius INTEGER RANGE largest shift in pixels (1: the notebook's 5x set) [default: 1; 0<=x<=27]" in text
    assert "--shape [cross|square]" in text and "[default: cross]" in text
    pca = " ".join(_cli("transform", "pca", "--help").stdout.split())
    assert "--whiten BOOLEAN scale each component to unit variance" in pca


def test_every_transform_parameter_is_described():
    from mnist_dask.transforms.parameters import DEFAULTS, PARAMETERS, SUMMARIES
    from mnist_dask.transforms.registry import TRANSFORMS

    assert set(PARAMETERS) == set(TRANSFORMS)
    assert list(DEFAULTS) == list(SUMMARIES) == list(TRANSFORMS)  # the commands the CLI lists without the registry
    for name, spec in TRANSFORMS.items():
        assert set(PARAMETERS[name]) == set(spec.defaults), name
        assert all(param.help for param in PARAMETERS[name].values()), name


@pytest.fixture(scope="module")
def small_store(small, tmp_path_factory) -> tuple[Path, Path]:
    """(store, IDX folder): the small generated MNIST ingested through the default path."""
    root = tmp_path_factory.mktemp("output")
    folder = small.write_idx(root / "idx")
    done = _cli(
        "ingest", "--source", f"idx:{folder}", "--store", root / "s.zarr", "--chunk-size", "16", "--workers", "1"
    )
    assert done.returncode == 0, done.stderr
    return root / "s.zarr", folder


def test_a_no_op_ingest_starts_no_cluster(small_store):
    store, folder = small_store
    before = sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*"))
    done = _cli("ingest", "--source", f"idx:{folder}", "--store", store, "--chunk-size", "16", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"{store}: already ingested from these inputs (train 40, test 20 images); nothing to do (--force rewrites)\n"
    )
    assert done.stderr == ""  # no dashboard line: no cluster was started
    assert sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*")) == before


def test_run_without_a_terminal_prints_the_dashboard_and_each_stage(small_store, tmp_path):
    store, _ = small_store
    done = _cli("run", REPO / "jobs" / "knn_baseline.toml", "--store", store, "--run-dir", tmp_path, "--workers", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Dask: local cluster, 1 worker process; dashboard http://127.0.0.1:")
    assert all(PROGRESS_LINE.match(line) and not DASK_LOG_LINE.search(line) for line in lines), done.stderr
    for stage in ("ingest", "knn", "predict"):  # the job's stages, each when it starts and when it ends
        assert f"[knn_baseline] stage {stage} started" in lines
        assert any(re.fullmatch(rf"\[knn_baseline\] stage {stage} done in \d+\.\d s", line) for line in lines)
    assert "predict: started" in lines  # and the computing stage inside
    assert done.stdout.startswith("knn_baseline: test accuracy ")


def test_a_task_failing_on_a_local_worker_is_one_line_even_with_verbose_off(small, tmp_path):
    """The lead's fix (LocalCluster(silence_logs=CRITICAL)): the workers' 'Compute Failed' report stays quiet."""
    train, test = small.write_csv(tmp_path / "csv")
    train.write_text(train.read_text().replace(",", ",x", 1))  # found by the parser on a worker
    done = _cli("ingest", "--source", f"csv:{train},{test}", "--store", tmp_path / "s.zarr", "--workers", "1")
    assert done.returncode == 2
    assert done.stderr == f"mnist-dask: error: {train}: non-integer value 'x0' at line 1, column 2\n"
    verbose = _cli("ingest", "--source", f"csv:{train},{test}", "--store", tmp_path / "s.zarr", "--workers", "1", "-v")
    assert verbose.returncode == 2 and verbose.stderr.splitlines()[-1] == done.stderr.strip()
    assert not (tmp_path / "s.zarr").exists()


def test_a_published_figure_the_result_lacks_is_named_at_the_end_of_the_run(small_store, tmp_path):
    """A typo in [expect] is not silent: a warning names the key, and the last line counts it missing."""
    store, _ = small_store
    job = tmp_path / "typo.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n[expect]\ntest_acuracy = 0.9688\n")
    done = _cli("run", job, "--store", store, "--run-dir", tmp_path / "run", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert f"[typo] warning: {job}: expect.test_acuracy: the result has no figure of that name (a typo?)" in (
        done.stderr.splitlines()
    )
    assert done.stdout.splitlines()[-1].startswith("typo: test accuracy ")
    assert "; published figures: 0 of 1 reproduced (1 missing); results in" in done.stdout


def test_a_transform_with_another_seed_leaves_the_default_stage_name_to_the_jobs(small_store, tmp_path):
    """``transform shift --seed 7`` writes its own stage, so a job's ``shift`` step (seed 42) still finds
    ``derived/shift5x`` free (it was taken, and the job failed on 'other parameters')."""
    store = tmp_path / "s.zarr"
    shutil.copytree(small_store[0], store)
    for seed, stage in (("7", "derived/shift5x-seed7"), ("42", "derived/shift5x")):
        done = _cli("transform", "shift", "--seed", seed, "--store", store, "--workers", "1")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{store}: wrote {stage}\n"


@pytest.mark.parametrize("closed", ["stdout", "stdout and stderr"])
def test_a_reader_that_goes_away_does_not_fail_the_run(closed, small_store, tmp_path):
    """`mnist-dask run ... | head -2`: the pipe closes early; the run still finishes, with no traceback."""
    store, _ = small_store
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MNIST_DASK_SOURCE")}
    env["TMPDIR"] = str(tmp_path / "tmp")  # where an internal error would leave its traceback
    command = [sys.executable, "-m", "mnist_dask", "run", str(REPO / "jobs" / "knn_baseline.toml")]
    both = closed == "stdout and stderr"
    process = subprocess.Popen(
        [*command, "--store", str(store), "--run-dir", str(tmp_path / "run"), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if both else subprocess.DEVNULL,
        env=env,
    )
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()  # the reader is gone before the command writes anything
    assert process.wait(timeout=300) == 0
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"
    assert (tmp_path / "run" / "result.json").is_file()
    assert list((tmp_path / "tmp").glob("*.traceback")) == []


def test_report_draws_a_moved_store_of_the_same_images(small_store, tmp_path):
    """--store may name where the run's store went (same images, another path): the report is written from it."""
    from mnist_dask.data.store import Store

    store, _ = small_store
    inputs = Store(str(store)).stage_attrs("raw")["fingerprint"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"job": "x", "store": str(tmp_path / "gone.zarr"), "inputs": inputs}))
    done = _cli("report", run, "--store", store)
    assert done.returncode == 0, done.stderr
    assert (run / "report.html").is_file()


def test_classify_fits_on_a_moved_store_of_the_same_images(small_store, tmp_path):
    """--store may name where the run's store went (same images, another path): classify gives the same digits
    there as with the run's store where result.json names it."""
    from PIL import Image

    from mnist_dask.data.store import Store

    store, _ = small_store
    drawn = Image.new("L", (40, 40), 255)
    drawn.paste(0, (18, 5, 22, 35))  # a "1", dark on light
    drawn.save(tmp_path / "one.png")
    run = tmp_path / "run"
    run.mkdir()
    result = {"job": "x", "store": str(store), "inputs": Store(str(store)).stage_attrs("raw")["fingerprint"]}
    (run / "result.json").write_text(json.dumps({**result, "model": {"n_neighbors": 3}}))
    at_home = _cli("classify", tmp_path / "one.png", "--run", run)
    assert at_home.returncode == 0, at_home.stderr
    (run / "result.json").write_text(
        json.dumps({**result, "store": str(tmp_path / "gone.zarr"), "model": {"n_neighbors": 3}})
    )
    moved = _cli("classify", tmp_path / "one.png", "--run", run, "--store", store)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == at_home.stdout and moved.stdout.startswith(f"{tmp_path / 'one.png'}: ")
