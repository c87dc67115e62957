"""The whole study as one run: jobs in order on one cluster and store, failures reported, finished jobs skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from mnist_dask.jobs.study import _earlier_cost, run_study, study_jobs

SAMPLE = "steps = [{ transform = 'sample', train = 3000, test = 500, seed = 1 }]"


def _write_jobs(folder: Path, expected_accuracy: float) -> list[Path]:
    folder.mkdir()
    (folder / "a_small_knn.toml").write_text(
        f"experiment = 'knn'\n[params]\n{SAMPLE}\n[params.model]\nn_neighbors = 3\n"
        f"[expect]\ntest_accuracy = {expected_accuracy!r}\ntest_errors = 1\n"
        "[differs]\ntest_errors = 'a figure this test makes up, to see a difference explained'\n"
    )
    (folder / "b_broken.toml").write_text(  # more neighbours than training rows: the job fails once it runs
        "experiment = 'knn'\n[params]\nsteps = [{ transform = 'sample', train = 3, test = 2 }]\n"
        "[params.model]\nn_neighbors = 5\n[expect]\ntest_accuracy = 0.9\n"
    )
    (folder / "zero_detector.toml").write_text(
        "experiment = 'zero_detector'\n[params]\nsample = 2000\ntest_sample = 500\n[expect]\ntest_accuracy = 0.5\n"
    )
    return sorted(folder.glob("*.toml"))


def test_study_runs_every_job_reports_failures_and_skips_what_is_finished(store, client, tmp_path, mnist):
    rng = np.random.default_rng(1)
    train, test = np.sort(rng.choice(60_000, 3000, replace=False)), np.sort(rng.choice(10_000, 500, replace=False))
    knn = KNeighborsClassifier(3).fit(mnist["train_images"][train].reshape(-1, 784), mnist["train_labels"][train])
    accuracy = float(knn.score(mnist["test_images"][test].reshape(-1, 784), mnist["test_labels"][test]))

    jobs = study_jobs(_write_jobs(tmp_path / "jobs", accuracy), tmp_path / "runs")
    names = [item.job.name for item in jobs]
    assert names == ["a_small_knn", "b_broken", "zero_detector"]  # knn first, then experiments
    lines: list[str] = []
    record = run_study(jobs, store, client, tmp_path / "study", log=lines.append)

    states = {entry["job"]: entry["state"] for entry in record["jobs"]}
    assert states == {"a_small_knn": "finished", "b_broken": "failed", "zero_detector": "finished"}
    finished = next(entry for entry in record["jobs"] if entry["job"] == "zero_detector")
    assert finished["tasks"] >= 1 and 0 < finished["floor_seconds"] <= finished["seconds"] and finished["workers"] == 2
    assert record["failed"] == ["b_broken"]
    broken = next(entry for entry in record["jobs"] if entry["job"] == "b_broken")
    assert broken["error"] and "\n" not in broken["error"]
    figures = {(f["job"], f["key"]): f for f in record["figures"]}
    assert figures[("a_small_knn", "test_accuracy")]["status"] == "exact"
    assert figures[("a_small_knn", "test_errors")]["status"] == "differs"
    assert figures[("a_small_knn", "test_errors")]["reason"].startswith("a figure this test makes up")
    assert figures[("zero_detector", "test_accuracy")]["reason"] == "unexplained"
    assert figures[("b_broken", "test_accuracy")]["status"] == "missing"  # a failed job's figures are not met
    assert record["ledger"] == {"exact": 1, "within print precision": 0, "differs": 2, "missing": 1}
    assert any("[2/3] b_broken: FAILED" in line for line in lines)
    assert "[3/3] zero_detector: fitting the pipeline as one cluster task" in lines  # the job's name said once

    on_disk = json.loads((tmp_path / "study" / "study.json").read_text())
    assert on_disk["ledger"] == record["ledger"] and len(on_disk["jobs"]) == 3
    page = (tmp_path / "study" / "index.html").read_text()
    assert "1 of 4 published figures reproduced" in page
    assert 'href="../runs/a_small_knn/report.html"' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    summary = (tmp_path / "study" / "figures.md").read_text()
    assert summary.startswith("1 of 4 published figures reproduced")
    assert "Failed: b_broken." in summary.splitlines()[0]
    assert "| a_small_knn | 2 | 1 | 0 | 1 | 0 |" in summary
    assert "| b_broken | 1 | 0 | 0 | 0 | 1 | failed after " in summary
    assert "| a_small_knn | test_errors | 1 |" in summary and "a figure this test makes up" in summary

    again = run_study(jobs, store, client, tmp_path / "study", log=lines.append)
    assert {e["job"]: e["state"] for e in again["jobs"]} == {
        "a_small_knn": "skipped",
        "b_broken": "failed",
        "zero_detector": "skipped",
    }
    assert again["ledger"] == record["ledger"]  # the skipped jobs' figures come from their finished runs
    skipped = next(entry for entry in again["jobs"] if entry["job"] == "zero_detector")
    assert {k: skipped[k] for k in ("tasks", "floor_seconds", "workers")} == {
        k: finished[k] for k in ("tasks", "floor_seconds", "workers")
    }  # a skipped job keeps the cost of the run that finished it
    # the study's cost from scratch counts a skipped job with its finished run's time, not the 0 s it took here
    knn_run = next(entry for entry in again["jobs"] if entry["job"] == "a_small_knn")["run_seconds"]
    broken_again = next(entry for entry in again["jobs"] if entry["job"] == "b_broken")["seconds"]
    assert knn_run > 0 and skipped["run_seconds"] > 0
    assert again["jobs_seconds"] == pytest.approx(knn_run + skipped["run_seconds"] + broken_again, abs=0.2)
    assert "(earlier run)" in (tmp_path / "study" / "index.html").read_text()
    forced = run_study(jobs[:1], store, client, tmp_path / "study", force=True, log=lines.append)
    assert forced["jobs"][0]["state"] == "finished"

    # a reason written for the zero detector's figure re-scores the ledger; the finished run stands
    zero = tmp_path / "jobs" / "zero_detector.toml"
    zero.write_text(zero.read_text() + "[differs]\ntest_accuracy = 'made up by this test'\n")
    explained = run_study(study_jobs([zero], tmp_path / "runs"), store, client, tmp_path / "study", log=lines.append)
    assert explained["jobs"][0]["state"] == "skipped"
    assert explained["figures"][0]["reason"] == "made up by this test"
    zero.write_text(zero.read_text().replace("sample = 2000", "sample = 1500"))  # what it computes changed
    rerun = run_study(study_jobs([zero], tmp_path / "runs"), store, client, tmp_path / "study", log=lines.append)
    assert rerun["jobs"][0]["state"] == "finished"
    assert _earlier_cost(jobs[2])["tasks"] == rerun["jobs"][0]["tasks"]
    (tmp_path / "runs" / "zero_detector" / "result.json").write_text("{}")  # a result the kept cost is not for
    assert _earlier_cost(jobs[2]) == {}


def test_a_rescore_leaves_a_result_that_a_run_replaced_meanwhile(tmp_path):
    """The study read a finished result and decided to re-score it; a run of the same folder then finished with
    another result before the study took the folder's lock: that newer result stands, untouched, with a warning."""
    from mnist_dask.data.store import Store
    from mnist_dask.jobs.spec import load_job
    from mnist_dask.jobs.study import StudyJob, _rescored

    job_file = tmp_path / "tiny.toml"
    job_file.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 1\n[expect]\ntest_accuracy = 0.5\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    newer = {"job": "tiny", "metrics": {"test_accuracy": 0.75}, "timings_s": {}}
    (run_dir / "result.json").write_text(json.dumps(newer))
    read_by_the_study = {**newer, "metrics": {"test_accuracy": 0.25}}
    lines: list[str] = []
    kept = _rescored(
        StudyJob(load_job(job_file), run_dir), read_by_the_study, Store(str(tmp_path / "s.zarr")), lines.append
    )
    assert kept == read_by_the_study
    assert json.loads((run_dir / "result.json").read_text()) == newer
    assert not (run_dir / "report.html").exists()
    assert lines == ["warning: not re-scored in its run folder: a run replaced its result meanwhile"]
