"""The k-NN studies (knn, knn_best) refuse what their data cannot support before any work, naming job file and key.

More neighbours than training rows, more folds than rows, than a class's rows (stratified)
or than source images (group folds) are one-line errors; a grid that leaves out weights
searches scikit-learn's default. Run with ``run_job`` on a small balanced store (4 training
images of each digit) and the module's real LocalCluster.
"""

from __future__ import annotations

import json

import pytest
from store_damage import balanced_small_mnist

from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.experiments import EXPERIMENTS, Context, ParamsError
from mnist_dask.jobs.driver import run_job
from mnist_dask.jobs.spec import parse_job


@pytest.fixture(scope="module")
def store(tmp_path_factory, client) -> Store:
    folder = balanced_small_mnist().write_idx(tmp_path_factory.mktemp("idx"))
    store = Store(str(tmp_path_factory.mktemp("store") / "mnist.zarr"))
    ingest(Source("idx", (str(folder),)), store, client, chunk_size=16)
    return store


def _run(store, client, tmp_path, params, experiment="knn"):
    job = parse_job({"experiment": experiment, "params": params}, "job.toml")
    return run_job(job, store, client, tmp_path / "run", log=lambda line: None)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"model": {"n_neighbors": 41}},
            "params.model.n_neighbors = 41: more neighbours than the 40 training rows of raw",
        ),
        (
            {"sweep": {"n_neighbors": [1, 50]}},
            "params.sweep.n_neighbors = 50: more neighbours than the 40 training rows of raw",
        ),
        (
            {"steps": [{"transform": "sample", "train": 3}]},
            "params.model.n_neighbors: the default 5 neighbours exceed the 3 training rows of derived/sample3-0; "
            "set a smaller one",
        ),
        (
            {"search": {"param_grid": {"n_neighbors": [1]}, "cv": 5}},
            "params.search.cv = 5: stratified folds need at least 5 rows of each class, "
            "but class 0 has 4 in the training rows of raw",
        ),
        (
            {"search": {"param_grid": {"n_neighbors": [30]}, "cv": 2}},
            "params.search.param_grid.n_neighbors = 30: more neighbours than the 20 training rows of a fold of raw",
        ),
        (
            {
                "steps": [{"transform": "sample", "train": 3}],
                "search": {"param_grid": {"n_neighbors": [1]}, "cv": 4, "on": "dataset"},
                "model": {"n_neighbors": 1},
            },
            "params.search.cv = 4: more folds than the 3 training rows of derived/sample3-0",
        ),
        (
            {
                "steps": [{"transform": "shift"}],
                "search": {"param_grid": {"n_neighbors": [1]}, "cv": 41, "on": "dataset"},
            },
            "params.search.cv = 41: more folds than the 40 source images (rows of one image share a fold) "
            "of derived/shift5x",
        ),
        (
            {"steps": [{"transform": "sample", "train": 41}]},
            "params.steps[0].train = 41: more than the 40 training rows of raw",
        ),
        (
            {"steps": [{"transform": "deskew"}, {"transform": "sample", "test": 21}]},
            "params.steps[1].test = 21: more than the 20 test rows of derived/deskew",
        ),
        (
            {"steps": [{"transform": "shift"}, {"transform": "sample", "train": 201}]},
            "params.steps[1].train = 201: more than the 200 training rows of derived/shift5x",
        ),
        (
            {"steps": [{"transform": "augment"}, {"transform": "sample", "train": 281}]},
            "params.steps[1].train = 281: more than the 280 training rows of derived/aug7x-s1c-r10",
        ),
        (
            {"steps": [{"transform": "rotate"}, {"transform": "sample", "test": 21}]},
            "params.steps[1].test = 21: more than the 20 test rows of derived/rot10x3",
        ),
    ],
    ids=[
        "model-k",
        "sweep-k",
        "default-k",
        "cv-class",
        "grid-k",
        "cv-rows",
        "cv-groups",
        "sample-train",
        "sample-test",
        "sample-after-shift",
        "sample-after-augment",
        "sample-test-after-rotate",
    ],
)
def test_what_the_data_cannot_support_is_one_line_before_any_search_or_prediction(
    store, client, tmp_path, params, message
):
    with pytest.raises(UserError) as exc:
        _run(store, client, tmp_path, params)
    assert str(exc.value) == f"job.toml: {message}"
    assert not (tmp_path / "run" / "predictions.zarr").exists()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].endswith(message)


def test_a_grid_without_weights_searches_uniform_weights_only(store, client, tmp_path):
    result = _run(store, client, tmp_path, {"search": {"param_grid": {"n_neighbors": [1, 2]}, "cv": 2}})
    assert [p["weights"] for p in result["search"]["cv_results"]["params"]] == ["uniform", "uniform"]
    assert result["search"]["best_params"]["weights"] == "uniform"
    assert result["model"]["weights"] == "uniform"


def test_rows_are_counted_through_an_expansion_before_it_is_computed(store, client, tmp_path):
    """A model asking for more neighbours than a 25x shift's rows was refused only once the shift was computed;
    now before it, from the shift's own row count."""
    params = {"steps": [{"transform": "shift", "radius": 2, "shape": "square"}], "model": {"n_neighbors": 1001}}
    with pytest.raises(UserError) as exc:
        _run(store, client, tmp_path, params)
    assert str(exc.value) == (
        "job.toml: params.model.n_neighbors = 1001: more neighbours than the 1000 training rows of derived/shift25x"
    )
    assert not store.has("derived/shift25x")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"train_sample": 41}, "params.train_sample = 41: more than the 40 training rows of raw"),
        ({"test_sample": 21}, "params.test_sample = 21: more than the 20 test rows of raw"),
        ({"cv": 41}, "params.cv = 41: more folds than the 40 training rows of raw"),
        ({"train_sample": 10, "cv": 11}, "params.cv = 11: more folds than the 10 training rows of derived/sample10-0"),
    ],
    ids=["train_sample", "test_sample", "cv", "cv-of-sample"],
)
def test_knn_best_refuses_what_raws_rows_rule_out_before_any_stage(store, client, tmp_path, params, message):
    """knn_best's own sample failed inside its first stage with 'transform sample: train must lie in [0, 40]',
    naming neither the job file nor the key; now checked with the store's rows before the run."""
    with pytest.raises(UserError) as exc:
        _run(store, client, tmp_path, params, experiment="knn_best")
    assert str(exc.value) == f"job.toml: {message}"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].endswith(message)


@pytest.mark.parametrize(
    "experiment, params, message",
    [
        (
            "knn",
            {"steps": [{"transform": "shift"}, {"transform": "sample", "train": 201}]},
            "params.steps[1].train = 201: more than the 200 training rows of derived/shift5x",
        ),
        ("knn_best", {"train_sample": 41}, "params.train_sample = 41: more than the 40 training rows of raw"),
        (
            "knn",
            {"search": {"param_grid": {"n_neighbors": [1]}, "cv": 2, "rows": 41}},
            "params.search.rows = 41: more than the 40 training rows of raw",
        ),
    ],
    ids=["knn-sample-after-shift", "knn_best-train_sample", "knn-search-rows"],
)
def test_the_run_itself_names_the_key_too(store, client, tmp_path, experiment, params, message):
    """An experiment run without the driver's check up front (the rows it could not count before) refuses the
    parameter with the same key, not the transform's 'train must lie in [0, 200]'."""
    job = parse_job({"experiment": experiment, "params": params}, "job.toml")
    with pytest.raises(ParamsError) as exc:
        EXPERIMENTS[experiment].run(Context(store, client, tmp_path), job.params)
    assert str(exc.value) == message
