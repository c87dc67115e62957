"""``mnist-dask study`` as a user runs it (the local cluster it starts), and ``study --submit`` to a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import TINY_KNN_JOB, printed_follow_command

SMALL_KNN = (
    "experiment = 'knn'\n[params]\nsteps = [{ transform = 'sample', train = 2000, test = 300, seed = 3 }]\n"
    "[params.model]\nn_neighbors = 3\n"
)
FAILING = (  # more neighbours than training rows: fails once it runs
    "experiment = 'knn'\n[params]\nsteps = [{ transform = 'sample', train = 3, test = 2 }]\n"
    "[params.model]\nn_neighbors = 5\n"
)


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "small_knn.toml").write_text(
        SMALL_KNN + "[expect]\ntest_errors = 0\n[differs]\ntest_errors = 'made up'\n"
    )
    (folder / "zero.toml").write_text("experiment = 'zero_detector'\n[params]\nsample = 2000\ntest_sample = 300\n")
    return folder


def test_study_on_the_default_local_cluster_reports_a_failure_last_and_skips_finished_jobs(jobs, mnist_dir, tmp_path):
    (jobs / "broken.toml").write_text(FAILING)
    store = str(tmp_path / "storage" / "mnist.zarr")
    done = _cli(
        "study",
        *map(str, sorted(jobs.glob("*.toml"))),
        "--store",
        store,
        "--source",
        f"idx:{mnist_dir}",
        "--workers",
        "2",
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("mnist-dask: error: study: 1 of 3 jobs failed: broken")
    assert "Traceback" not in done.stderr and not any(" - distributed." in line for line in lines)
    assert any("[1/3] broken: FAILED" in line for line in lines)
    assert any("[2/3] small_knn: finished" in line for line in lines)
    assert "published figures reproduced" in done.stdout
    study = json.loads((tmp_path / "storage" / "study" / "study.json").read_text())
    assert [(j["job"], j["state"]) for j in study["jobs"]] == [
        ("broken", "failed"),
        ("small_knn", "finished"),
        ("zero", "finished"),
    ]
    assert (tmp_path / "storage" / "study" / "index.html").is_file()
    assert (tmp_path / "storage" / "runs" / "small_knn" / "report.html").is_file()

    again = _cli("study", str(jobs / "small_knn.toml"), "--store", store, "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "small_knn: already finished with this job file and store; skipped" in again.stderr


def test_study_submitted_to_a_cluster_runs_there_and_is_followed_with_status(dask_processes, jobs, mnist_dir, tmp_path):
    store = str(tmp_path / "storage" / "mnist.zarr")
    ingested = _cli("ingest", "--store", store, "--source", f"idx:{mnist_dir}", "--scheduler", dask_processes.address)
    assert ingested.returncode == 0, ingested.stderr
    submitted = _cli(
        "study",
        *map(str, sorted(jobs.glob("*.toml"))),
        "--submit",
        "--scheduler",
        dask_processes.address,
        "--store",
        store,
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]
    assert run_id.startswith("study-")
    deadline = time.monotonic() + 400
    while True:
        status = json.loads(_cli("status", run_id, "--json", "--store", store).stdout)
        if status["state"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["state"] == "finished", status
    study = json.loads((tmp_path / "storage" / "runs" / run_id / "study.json").read_text())
    assert [j["job"] for j in study["jobs"]] == ["small_knn", "zero"]
    assert all(j["state"] == "finished" for j in study["jobs"])
    assert study["ledger"]["differs"] == 1


def _follow_study(run_id: str, store: str, timeout: float = 300) -> dict:
    """Poll ``status --json`` (from the run folder) until the submitted study ends; its last record."""
    deadline = time.monotonic() + timeout
    while True:
        done = _cli("status", run_id, "--json", "--store", store)
        record = json.loads(done.stdout)
        assert done.returncode == (1 if record["state"] in ("failed", "lost") else 0), done.stderr
        if record["state"] not in ("queued", "running"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(1)


def test_a_submitted_study_with_a_failed_job_is_recorded_failed_naming_the_job(dask_processes, small, tmp_path):
    """As 'mnist-dask study' exits 1 when a job fails, the submitted study's record says failed and names it."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "broken.toml").write_text(FAILING)
    (folder / "tiny.toml").write_text(TINY_KNN_JOB)
    store = str(tmp_path / "storage" / "mnist.zarr")
    idx = small.write_idx(tmp_path / "idx")
    ingested = _cli("ingest", "--store", store, "--source", f"idx:{idx}", "--scheduler", dask_processes.address)
    assert ingested.returncode == 0, ingested.stderr
    submitted = _cli(
        "study", *map(str, sorted(folder.glob("*.toml"))), "--submit", "--scheduler", dask_processes.address,
        "--store", store,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip().splitlines()[-1]

    record = _follow_study(run_id, store)

    shown = subprocess.run(printed_follow_command(submitted.stderr), capture_output=True, text=True, cwd=idx)
    assert shown.returncode == 1 and shown.stdout.startswith(f"run {run_id} (job study): failed"), shown

    study = json.loads((tmp_path / "storage" / "runs" / run_id / "study.json").read_text())
    assert [(j["job"], j["state"]) for j in study["jobs"]] == [("broken", "failed"), ("tiny", "finished")]
    assert record["state"] == "failed", record
    assert record["error"].startswith("study: 1 of 2 jobs failed: broken ("), record["error"]
    for where in (("--store", store), ("--scheduler", dask_processes.address)):
        shown = _cli("status", run_id, *where)
        assert shown.returncode == 1, shown.stderr  # a failed study
        assert f"run {run_id} (job study): failed" in shown.stdout
        assert "  error: study: 1 of 2 jobs failed: broken" in shown.stdout


def test_a_skipped_job_is_rescored_in_its_run_folder_keeps_its_wall_time_and_one_job_is_singular(small, tmp_path):
    """A study again over a finished run whose job file gained published figures ([expect], [differs]) skips it and
    re-scores it: the run's own result.json and report.html, which the study page links to, hold the same figures
    as the study (they kept the old scores). It still reports the same job seconds as the study that ran the job
    (not only its stages' share), and its lines say '1 job', 'on 1 worker'."""
    store = str(tmp_path / "storage" / "mnist.zarr")
    job = tmp_path / "tiny.toml"
    job.write_text(TINY_KNN_JOB)
    idx = small.write_idx(tmp_path / "idx")
    study_file = tmp_path / "storage" / "study" / "study.json"
    run_dir = tmp_path / "storage" / "runs" / "tiny"

    first = _cli("study", str(job), "--store", store, "--source", f"idx:{idx}", "--workers", "1")
    assert first.returncode == 0, first.stderr
    ran = json.loads(study_file.read_text())
    assert "expected" not in json.loads((run_dir / "result.json").read_text())
    job.write_text(TINY_KNN_JOB + "[expect]\ntest_accuracy = 2.0\n[differs]\ntest_accuracy = 'impossible on purpose'\n")
    again = _cli("study", str(job), "--store", store, "--workers", "1")
    assert again.returncode == 0, again.stderr
    skipped = json.loads(study_file.read_text())

    assert "tiny: already finished with this job file and store; skipped" in again.stderr
    assert [j["state"] for j in skipped["jobs"]] == ["skipped"]
    result = json.loads((run_dir / "result.json").read_text())
    assert skipped["figures"] == [{"job": "tiny", "key": key, **entry} for key, entry in result["expected"].items()]
    assert [(f["key"], f["status"], f["reason"]) for f in skipped["figures"]] == [
        ("test_accuracy", "differs", "impossible on purpose")
    ]
    assert result["ledger"] == skipped["jobs"][0]["ledger"] == skipped["ledger"]
    assert skipped["jobs"][0]["report"] == str(run_dir / "report.html")
    report = (run_dir / "report.html").read_text()
    assert "Published figures beside ours" in report and "impossible on purpose" in report
    assert 'href="../runs/tiny/report.html"' in (study_file.parent / "index.html").read_text()
    assert f"tiny: published figures re-scored against {job}" in again.stderr, again.stderr
    assert skipped["jobs"][0]["run_seconds"] == ran["jobs"][0]["seconds"] > 0
    assert skipped["jobs_seconds"] == ran["jobs_seconds"]
    for done in (first, again):
        assert "reproduced; 1 job in " in done.stdout, done.stdout
    summary = (tmp_path / "storage" / "study" / "figures.md").read_text().splitlines()[0]
    assert "; 1 job, " in summary and " on 1 worker (" in summary, summary
    assert first.stderr.startswith("Dask: local cluster, 1 worker process; dashboard"), first.stderr


def test_studies_on_two_stores_in_one_folder_keep_their_own_runs_and_study_folders(small, tmp_path):
    """A study on storage/fashion.zarr ran its jobs into storage/runs (replacing storage/mnist.zarr's runs) and wrote
    over storage/study; each store now has its own: runs/ and study/ for mnist.zarr, runs-fashion/ and study-fashion/
    for fashion.zarr."""
    job = tmp_path / "tiny.toml"
    job.write_text(TINY_KNN_JOB)
    storage = tmp_path / "storage"
    for seed, name in enumerate(("mnist", "fashion")):
        idx = type(small)(seed=seed).write_idx(tmp_path / f"idx-{name}")
        done = _cli(
            "study", str(job), "--store", str(storage / f"{name}.zarr"), "--source", f"idx:{idx}", "--workers", "1"
        )
        assert done.returncode == 0, done.stderr
    for name, suffix in (("mnist", ""), ("fashion", "-fashion")):
        study = json.loads((storage / f"study{suffix}" / "study.json").read_text())
        assert [(j["state"], j["run_dir"]) for j in study["jobs"]] == [
            ("finished", str(storage / f"runs{suffix}" / "tiny"))
        ]
        result = json.loads((storage / f"runs{suffix}" / "tiny" / "result.json").read_text())
        assert result["store"] == str(storage / f"{name}.zarr")
        assert study["jobs"][0]["test_accuracy"] == result["metrics"]["test_accuracy"]
    assert sorted(path.name for path in storage.iterdir()) == [
        "fashion.zarr", "mnist.zarr", "runs", "runs-fashion", "study", "study-fashion"
    ]  # fmt: skip
