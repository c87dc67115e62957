"""Bad transform parameters and impossible chains are refused up front: one line, no stage touched.

Every check runs before any read or write, so a bad value never leaves an incomplete stage
behind (a negative downscale factor used to leave ``derived/down-14`` incomplete forever).
Library calls use the module's real LocalCluster and a small store; CLI calls run the
command as a subprocess on its default path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_damage import assert_user_error, balanced_small_mnist, cli, snapshot

from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.jobs.spec import parse_job
from mnist_dask.transforms.registry import TRANSFORMS, chain_problem, run_transform
from mnist_dask.transforms.validation import resolve_params


@pytest.fixture(scope="module")
def store(tmp_path_factory, client) -> Store:
    """A small store with raw, a features stage (pca) and a non-dataset stage (mean)."""
    folder = balanced_small_mnist().write_idx(tmp_path_factory.mktemp("idx"))
    store = Store(str(tmp_path_factory.mktemp("store") / "mnist.zarr"))
    ingest(Source("idx", (str(folder),)), store, client, chunk_size=16)
    run_transform(store, client, "pca", {"n_components": 5})
    run_transform(store, client, "mean")
    return store


BAD_PARAMETERS = [
    ("downscale", {"factor": 0}, "transform downscale: factor must lie in [1, 28], got 0"),
    ("downscale", {"factor": -2}, "transform downscale: factor must lie in [1, 28], got -2"),
    ("downscale", {"factor": 1_000_000}, "transform downscale: factor must lie in [1, 28], got 1000000"),
    ("downscale", {"factor": 2.5}, "transform downscale: factor=2.5 is not a whole number"),
    ("downscale", {"factor": True}, "transform downscale: factor=True is not a whole number"),
    ("rotate", {"degrees": 400.0}, "transform rotate: degrees must lie in (0, 180], got 400"),
    ("rotate", {"degrees": 0.0}, "transform rotate: degrees must lie in (0, 180], got 0"),
    ("augment", {"degrees": -3.0}, "transform augment: degrees must lie in [0, 180], got -3"),
    ("augment", {"degrees": float("nan")}, "transform augment: degrees must lie in [0, 180], got nan"),
    ("augment", {"radius": -1}, "transform augment: radius must lie in [0, 27], got -1"),
    ("shift", {"radius": 28}, "transform shift: radius must lie in [0, 27], got 28"),
    ("shift", {"shape": "circle"}, "transform shift: shape must be one of cross, square, got 'circle'"),
    ("shift", {"chunk_size": 0}, "transform shift: chunk_size must be 1 or more, got 0"),
    ("shift", {"seed": -1}, "transform shift: seed must be 0 or more, got -1"),
    ("shift", {"seed": "-1" + "0" * 400}, "transform shift: seed must be 0 or more, got -1000"),
    ("blur", {"sigma": -1.0}, "transform blur: sigma must be a finite number of at least 0, got -1.0"),
    ("blur", {"sigma": float("nan")}, "transform blur: sigma must be a finite number of at least 0, got nan"),
    (
        "varthresh",
        {"threshold": float("inf")},
        "transform varthresh: threshold must be a finite number of at least 0, got inf",
    ),
    ("sample", {"train": -5}, "transform sample: train must be 0 or more, got -5"),
    ("pca", {"n_components": 0}, "transform pca: n_components must lie in [1, 784], got 0"),
    ("pca", {"scale_power": float("inf")}, "transform pca: scale_power must be a finite number of at least 0, got inf"),
    ("pca", {"fit_on": "some"}, "transform pca: fit_on must be one of all, originals, got 'some'"),
    ("pca", {"svd_solver": "magic"}, "transform pca: svd_solver must be one of auto, full, tsqr, randomized"),
]


@pytest.mark.parametrize("name, params, message", BAD_PARAMETERS, ids=lambda v: str(v)[:30])
def test_a_bad_parameter_is_one_line_naming_the_transform_and_touches_no_stage(store, client, name, params, message):
    before = store.stages()
    with pytest.raises(UserError) as exc:
        run_transform(store, client, name, params)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert store.stages() == before


def test_integer_parameters_take_integers_or_their_text_only():
    assert resolve_params(TRANSFORMS["downscale"], {"factor": "4"})["factor"] == 4
    assert resolve_params(TRANSFORMS["blur"], {"sigma": 2})["sigma"] == 2.0
    with pytest.raises(UserError, match="factor='x' is not a whole number"):
        resolve_params(TRANSFORMS["downscale"], {"factor": "x"})


@pytest.mark.parametrize(
    "name, input_stage, message",
    [
        ("shift", "derived/pca5", "transform shift: needs images, but --input derived/pca5 holds features"),
        ("scale", "derived/pca5", "transform scale: needs images, but --input derived/pca5 holds features"),
        ("sample", "derived/pca5", "transform sample: needs images"),
        ("deskew", "derived/mean", "--input derived/mean: not a dataset (it has no train/test split)"),
        ("pca", "derived/mean", "--input derived/mean: not a dataset"),
    ],
)
def test_an_input_the_transform_cannot_use_is_refused_up_front(store, client, name, input_stage, message):
    before = store.stages()
    with pytest.raises(UserError) as exc:
        run_transform(store, client, name, {}, input_stage=input_stage)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert store.stages() == before


def test_pca_with_more_components_than_training_rows_is_one_line(store, client):
    """40 training rows: 50 components cannot be fitted (it was an internal error from scikit-learn)."""
    before = store.stages()
    with pytest.raises(UserError) as exc:
        run_transform(store, client, "pca", {"n_components": 50})
    assert str(exc.value) == (
        "transform pca: n_components must be between 1 and 40 (the training rows it is fitted on), got 50"
    )
    assert store.stages() == before


def test_pca_takes_features_too(store, client):
    assert run_transform(store, client, "pca", {"n_components": 3}, input_stage="derived/pca5").action == "written"


@pytest.mark.parametrize(
    "steps, problem",
    [
        (["pca", "shift"], "steps[1] (shift) needs images, but pca (steps[0]) gives features; put shift before pca"),
        (["scale", "augment"], "steps[1] (augment) needs images, but scale (steps[0]) gives features"),
        (["mean"], "the last step (mean) writes no dataset (no train/test split) to classify"),
        (["mean", "deskew"], "steps[1] (deskew) cannot follow mean: mean writes no dataset"),
        (["deskew", "shift", "pca", "pca"], None),
        (["varthresh", "pca"], None),
    ],
)
def test_job_chains_that_cannot_work_are_refused_when_the_job_is_read(steps, problem):
    data = {"experiment": "knn", "params": {"steps": [{"transform": name} for name in steps]}}
    if problem is None:
        assert chain_problem(steps) is None
        assert [s["transform"] for s in parse_job(data, "job.toml").params.steps] == steps
        return
    assert problem in (chain_problem(steps) or "")
    with pytest.raises(UserError) as exc:
        parse_job(data, "job.toml")
    assert str(exc.value).startswith("job.toml: params.steps: ") and problem in str(exc.value)


def test_a_bad_step_parameter_in_a_job_names_the_step():
    data = {"experiment": "knn", "params": {"steps": [{"transform": "downscale", "factor": -2}]}}
    with pytest.raises(UserError) as exc:
        parse_job(data, "job.toml")
    assert str(exc.value) == ("job.toml: params.steps[0]: transform downscale: factor must lie in [1, 28], got -2")


# -- through the CLI -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (("rotate", "--degrees", "400"), "--degrees: 400.0 is not in the range 0<x<=180"),
        (("rotate", "--degrees", "0"), "--degrees: 0.0 is not in the range 0<x<=180"),
        (("downscale", "--factor", "0"), "--factor: 0 is not in the range 1<=x<=28"),
        (("downscale", "--factor", "-2"), "--factor: -2 is not in the range 1<=x<=28"),
        (("shift", "--input", "derived/mean"), "--input derived/mean: not a dataset"),
    ],
    ids=["rotate-400", "rotate-0", "downscale-0", "downscale-negative", "shift-of-mean"],
)
def test_cli_transform_with_a_bad_value_is_one_line_and_leaves_the_store_as_it_was(store, tmp_path, args, message):
    before = snapshot(Path(store.url))
    done = cli("transform", *args, "--store", store.url, "--workers", 1, cwd=tmp_path)
    assert_user_error(done, message)
    assert snapshot(Path(store.url)) == before


def test_cli_run_of_a_job_whose_chain_cannot_work_fails_before_any_work(store, tmp_path):
    job = tmp_path / "chain.toml"
    job.write_text("experiment = 'knn'\n[[params.steps]]\ntransform = 'pca'\n[[params.steps]]\ntransform = 'shift'\n")
    before = snapshot(Path(store.url))
    done = cli("run", job, "--store", store.url, "--workers", 1, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(done, f"{job}: params.steps: steps[1] (shift) needs images, but pca (steps[0]) gives features")
    assert snapshot(Path(store.url)) == before
    assert not (tmp_path / "run").exists()
