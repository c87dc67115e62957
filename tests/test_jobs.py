"""Job files: the shipped jobs parse; every kind of mistake is a one-line error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_dask.errors import UserError
from mnist_dask.jobs.spec import load_job

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_job_parses(path):
    job = load_job(path)
    assert job.name == path.stem
    if job.experiment is None:  # a k-NN study job: a search or a fixed model
        assert job.search is not None or job.model["n_neighbors"] >= 1
    else:
        from mnist_dask.experiments import EXPERIMENTS

        assert set(job.params) == set(EXPERIMENTS[job.experiment].defaults)


def test_augmented_job_searches_on_raw_and_fits_on_the_shift_chain():
    job = load_job(JOBS / "knn_augmented.toml")
    assert job.search.on == "raw" and job.search.cv == 5
    assert job.search.param_grid == {"weights": ["uniform", "distance"], "n_neighbors": [3, 4, 5]}
    assert [(s.transform, s.params["radius"], s.params["shape"]) for s in job.steps] == [("shift", 1, "cross")]


@pytest.mark.parametrize("text, message", [
    ("colour = 'red'", "unknown key 'colour'"),
    ("[model]\nn_neighbours = 3", "unknown key [model] 'n_neighbours'"),
    ("[model]\nn_neighbors = 'five'", "model.n_neighbors must be a positive integer"),
    ("[model]\nn_neighbors = 0", "model.n_neighbors must be a positive integer"),
    ("[model]\nweights = 'gaussian'", "model.weights must be 'uniform' or 'distance'"),
    ("[search]\ncv = 5", "[search] needs param_grid"),
    ("[search]\nparam_grid = { leaf_size = [1] }", "unknown key [search.param_grid] 'leaf_size'"),
    ("[search]\ncv = 1\nparam_grid = { n_neighbors = [3] }", "search.cv must be at least 2"),
    ("[dataset]\nsteps = [{ transform = 'sharpen' }]", "unknown transform 'sharpen'"),
    ("[dataset]\nsteps = [{ transform = 'shift', radius = 'two' }]", "radius='two' is not a int"),
    ("[dataset]\nsteps = [{ transform = 'shift', radious = 2 }]", "unknown parameter 'radious'"),
    ("name = '../../etc'", "name '../../etc' must be letters"),
    ("description = 3", "description must be a string"),
    ("[model", "not valid TOML"),
])
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
