"""The scikit-learn experiments refuse a count of first rows above raw's rows, naming the key, before any work.

``X[:sample]`` silently cut such a count to the rows there were (a figure published for fewer rows than the
job file says), and small_sample's split failed after all its fits; each experiment's ``check`` now refuses it,
a default included (multiclass's ``svc_sample = 2000`` on a 40-row store). Checked on the parsed job's
parameters with the row counts of a 40/20-row store, and once through ``run_job`` on a store that only gets
raw by the run's own ingest.
"""

from __future__ import annotations

import json

import pytest
from store_damage import balanced_small_mnist

from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.experiments import EXPERIMENTS, ParamsError
from mnist_dask.jobs.driver import run_job
from mnist_dask.jobs.spec import parse_job

ROWS = {"train": 40, "test": 20}  # balanced_small_mnist's


def _check(experiment: str, params: dict) -> None:
    """Run ``experiment``'s check on the parameters of a job file holding ``params``, with :data:`ROWS`."""
    check = EXPERIMENTS[experiment].check
    assert check is not None, f"{experiment} registers no check"
    check(parse_job({"experiment": experiment, "params": params}, "job.toml").params, ROWS)


TOO_MANY = [
    ("small_sample", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("small_sample", {}, "params.sample = 6000 (the default): more than the 40 training rows of raw"),
    ("binary_5_detector", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("error_analysis", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("zero_detector", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("zero_detector", {"test_sample": 21}, "params.test_sample = 21: more than the 20 test rows of raw"),
    ("svm_kernels", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("svm_kernels", {"test_sample": 21}, "params.test_sample = 21: more than the 20 test rows of raw"),
    ("multiclass", {}, "params.svc_sample = 2000 (the default): more than the 40 training rows of raw"),
    ("multiclass", {"svc_sample": 41}, "params.svc_sample = 41: more than the 40 training rows of raw"),
    (
        "multiclass",
        {"svc_sample": 40, "sgd_sample": 41},
        "params.sgd_sample = 41: more than the 40 training rows of raw",
    ),
    (
        "multiclass",
        {"svc_sample": 40, "logistic_sample": 41},
        "params.logistic_sample = 41: more than the 40 training rows of raw",
    ),
    ("multiclass", {"svc_sample": 40, "test_sample": 21}, "params.test_sample = 21: more than the 20 test rows of raw"),
    ("multilabel", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("denoise", {"sample": 41}, "params.sample = 41: more than the 40 training rows of raw"),
    ("denoise", {"test_sample": 21}, "params.test_sample = 21: more than the 20 test rows of raw"),
    (
        "knn",
        {"search": {"param_grid": {"n_neighbors": [1]}, "cv": 2, "rows": 41}},
        "params.search.rows = 41: more than the 40 training rows of raw",
    ),
    (
        "knn",
        {
            "steps": [{"transform": "sample", "train": 10}],
            "search": {"param_grid": {"n_neighbors": [1]}, "cv": 2, "rows": 11, "on": "dataset"},
            "model": {"n_neighbors": 1},
        },
        "params.search.rows = 11: more than the 10 training rows of derived/sample10-0",
    ),
    (
        "knn",
        {
            "steps": [{"transform": "shift"}],
            "search": {"param_grid": {"n_neighbors": [1]}, "cv": 2, "rows": 201, "on": "dataset"},
        },
        "params.search.rows = 201: more than the 200 training rows of derived/shift5x",
    ),
]


@pytest.mark.parametrize(
    "experiment, params, message", TOO_MANY, ids=[f"{e}-{m.split(' =')[0][7:]}" for e, _, m in TOO_MANY]
)
def test_more_first_rows_than_raw_has_is_refused_naming_the_key(experiment, params, message):
    with pytest.raises(ParamsError) as exc:
        _check(experiment, params)
    assert str(exc.value) == message


FITTING = [
    ("small_sample", {"sample": 40}),
    ("binary_5_detector", {}),
    ("error_analysis", {"sample": 40}),
    ("zero_detector", {"sample": 40, "test_sample": 20}),
    ("svm_kernels", {}),
    ("multiclass", {"svc_sample": 40, "sgd_sample": 40, "logistic_sample": 40, "test_sample": 20}),
    ("multilabel", {"sample": 40}),
    ("denoise", {"sample": 40, "test_sample": 20}),
    ("knn", {"search": {"param_grid": {"n_neighbors": [1]}, "cv": 2, "rows": 40}}),
    (
        "knn",
        {
            "steps": [{"transform": "shift"}],
            "search": {"param_grid": {"n_neighbors": [1]}, "rows": 200, "on": "dataset"},
        },
    ),
]


@pytest.mark.parametrize("experiment, params", FITTING, ids=[e for e, _ in FITTING])
def test_every_row_or_all_of_them_passes(experiment, params):
    _check(experiment, params)  # as many rows as there are, or 0 (all): nothing to refuse


def test_a_store_that_gets_raw_from_the_runs_own_ingest_is_checked_once_it_is_there(tmp_path, client):
    """The check up front cannot count the rows of a store without raw; the run checks again after ingesting, so
    svm_kernels asking for 41 of 40 training rows still fails before the experiment, naming file and key."""
    folder = balanced_small_mnist().write_idx(tmp_path / "idx")
    store = Store(str(tmp_path / "mnist.zarr"))
    job = parse_job({"experiment": "svm_kernels", "params": {"sample": 41}}, "job.toml")
    with pytest.raises(UserError) as exc:
        run_job(job, store, client, tmp_path / "run", source=Source("idx", (str(folder),)), log=lambda line: None)
    message = "params.sample = 41: more than the 40 training rows of raw"
    assert str(exc.value) == f"job.toml: {message}"
    assert store.is_complete("raw")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].endswith(message)
    assert not (tmp_path / "run" / "result.json").exists()
