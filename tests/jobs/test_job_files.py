"""Job files: the shipped jobs parse; every kind of mistake is a one-line error naming the file and the key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from mnist_dask.errors import UserError
from mnist_dask.experiments import EXPERIMENTS
from mnist_dask.jobs.spec import load_job

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_job_parses_into_its_experiments_typed_parameters(path):
    job = load_job(path)
    assert job.name == path.stem
    assert isinstance(job.params, EXPERIMENTS[job.experiment].params)
    assert set(job.params_dict()) == {f.name for f in fields(job.params)}


def test_augmented_job_searches_on_raw_and_fits_on_the_shift_chain():
    job = load_job(JOBS / "knn_augmented.toml")
    assert job.experiment == "knn"
    search = job.params.search
    assert search.on == "raw" and search.cv == 5
    assert (search.param_grid.n_neighbors, search.param_grid.weights) == ([3, 4, 5], ["uniform", "distance"])
    assert [(s["transform"], s["radius"], s["shape"]) for s in job.params.steps] == [("shift", 1, "cross")]


def test_a_grid_that_leaves_out_weights_searches_the_default_weights(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("experiment = 'knn'\n[params.search]\nparam_grid = { n_neighbors = [3, 4] }\n")
    assert load_job(path).params.search.param_grid.weights == ["uniform"]


KNN = "experiment = 'knn'\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (KNN + "colour = 'red'", "unknown key 'colour'"),
        (
            KNN + "[params.model]\nn_neighbours = 3",
            "unknown key params.model.n_neighbours; allowed: n_neighbors, weights",
        ),
        (KNN + "[params.model]\nn_neighbors = 'five'", "params.model.n_neighbors: Input should be a valid integer"),
        (
            KNN + "[params.model]\nn_neighbors = 0",
            "params.model.n_neighbors: Input should be greater than or equal to 1",
        ),
        (KNN + "[params.model]\nn_neighbors = true", "params.model.n_neighbors: Input should be a valid integer"),
        (KNN + "[params.model]\nweights = 'gaussian'", "params.model.weights: Input should be 'uniform' or 'distance'"),
        (KNN + "[params.search]\ncv = 5", "params.search.param_grid is required"),
        (KNN + "[params.search]\nparam_grid = { leaf_size = [1] }", "unknown key params.search.param_grid.leaf_size"),
        (
            KNN + "[params.search]\ncv = 1\nparam_grid = { n_neighbors = [3] }",
            "params.search.cv: Input should be greater than or equal to 2",
        ),
        (
            KNN + "[params.search]\nparam_grid = { n_neighbors = [] }",
            "params.search.param_grid.n_neighbors: List should",
        ),
        (KNN + "[params]\nsteps = [{ transform = 'sharpen' }]", "params.steps[0]: unknown transform 'sharpen'"),
        (KNN + "[params]\nsteps = [{ transform = 'shift', radius = 'two' }]", "radius='two' is not a whole number"),
        (KNN + "[params]\nsteps = [{ transform = 'shift', radious = 2 }]", "unknown parameter 'radious'"),
        # the same ranges as `mnist-dask transform shift --radius`, checked before any work starts
        (KNN + "[params]\nsteps = [{ transform = 'shift', radius = 99 }]", "radius must lie in [0, 27], got 99"),
        (KNN + "[params]\nsteps = [{ transform = 'shift', radius = -1 }]", "radius must lie in [0, 27], got -1"),
        (KNN + "[params]\nsteps = [{ transform = 'pca', n_components = 900 }]", "n_components must lie in [1, 784]"),
        (KNN + "name = '../../etc'", "name '../../etc' must be letters"),
        (KNN + "description = 3", "description must be a string"),
        ("description = 'no experiment'", "needs experiment = NAME"),
        ("experiment = 'knn_worst'", "unknown experiment 'knn_worst'"),
        (
            "experiment = 'zero_detector'\n[params]\nsample = -5",
            "params.sample: Input should be greater than or equal to 0",
        ),
        ("experiment = 'svm_kernels'\n[params]\nkernels = ['poly', 'cubic']", "params.kernels[1]: Input should be"),
        (
            "experiment = 'multilabel'\n[params]\nsample = 2.5",
            "params.sample: Input should be a valid integer (got 2.5)",
        ),
        (
            "experiment = 'knn_best'\n[params]\nidm_bases = []",
            "params.idm_bases: List should have at least 1 item after validation, not 0",
        ),
        ("experiment = 'knn_best'\n[params]\nidm_bases = ['+shifts']", "params.idm_bases[0]: Input should be"),
        ("experiment = 'knn_best'\n[params]\npca_sizes = []", "params.pca_sizes: List should have at least 1 item"),
        ("experiment = 'svm_kernels'\n[params]\nkernels = []", "params.kernels: List should have at least 1 item"),
        ("experiment = 'small_sample'\n[params]\nsweep = []", "params.sweep: List should have at least 1 item"),
        ("[model", "not valid TOML"),
    ],
)
def test_bad_job_files_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_job(path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_job_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such job file"):
        load_job(tmp_path / "nope.toml")


def test_a_job_file_that_is_not_utf8_is_a_user_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("description = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_job(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[expect]\na = 1\n[differs]\nb = 'why'", "differs.b explains a figure that [expect] does not list"),
        ("[expect]\na = 1\n[differs]\na = ''", "differs.a must be a sentence"),
        ("[expect]\na = 1\n[differs]\na = 3", "differs.a must be a sentence"),
    ],
)
def test_differs_explains_listed_figures_in_words(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(KNN + text)
    with pytest.raises(UserError) as error:
        load_job(path)
    assert message in str(error.value)
