"""Stage names: every parameter that changes a transform's output is in its stage's name, so two variants live
side by side in one store, and the names (hence fingerprints and dask keys) of the shipped jobs' stages stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mnist_dask.experiments.knn_best import _pca
from mnist_dask.jobs.spec import load_job
from mnist_dask.transforms.registry import TRANSFORMS, output_stage
from mnist_dask.transforms.validation import resolve_params

REPO = Path(__file__).resolve().parents[2]
MAKE_COPIES = {"augment", "rotate"}  # their outputs hold train/copy; pca carries it on; the others drop it


def chain_stages(steps: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The stages a chain of (transform, params) steps applied to raw writes, as run_transform names them."""
    stage, copies, stages = "raw", False, []
    for name, params in steps:
        stage = output_stage(name, resolve_params(TRANSFORMS[name], params), stage, copies)
        copies = name in MAKE_COPIES or (name == "pca" and copies)
        stages.append(stage)
    return stages


def test_the_shipped_jobs_stage_names_are_unchanged():
    """The names the published figures were computed under (steps of knn jobs, and knn_best's search)."""
    named = {}
    for path in sorted((REPO / "jobs").glob("*.toml")):
        steps = getattr(load_job(path).params, "steps", None)
        if steps:
            named[path.stem] = chain_stages(
                [(s["transform"], {k: v for k, v in s.items() if k != "transform"}) for s in steps]
            )
    assert named == {
        "knn_augmented": ["derived/shift5x"],
        "knn_augmented25": ["derived/shift25x"],
        "knn_downscaled": ["derived/down10"],
    }
    p = load_job(REPO / "jobs" / "knn_best.toml").params
    assert (p.train_sample, p.test_sample, list(p.blur_sigmas), p.shift_radius, p.shift_shape) == (
        0,
        0,
        [1.0],
        1,
        "cross",
    )
    blur = [("deskew", {}), ("blur", {"sigma": 1.0})]
    assert chain_stages(blur) == ["derived/deskew", "derived/deskew+blur1"]
    for n in p.pca_sizes:
        for power in p.pca_scale_powers:
            pca = f"pca{n}" + (f"p{power:g}" if power else "")
            assert chain_stages([*blur, ("pca", _pca(n, power))])[-1] == f"derived/deskew+blur1+{pca}"
            for degrees, copies in [(0.0, 5), *((d, 7) for d in p.rotation_degrees)]:
                augment = ("augment", {"radius": 1, "shape": "cross", "degrees": float(degrees)})
                assert chain_stages([*blur, augment, ("pca", _pca(n, power))])[2:] == [
                    f"derived/deskew+blur1+aug{copies}x-s1c-r{degrees:g}",
                    f"derived/deskew+blur1+aug{copies}x-s1c-r{degrees:g}+{pca}",
                ]


AUGMENTED = [("augment", {"radius": 1, "shape": "cross", "degrees": 10.0})]


@pytest.mark.parametrize(
    "before, name, params, other, expected",
    [
        ([], "shift", {}, {"seed": 7}, "derived/shift5x-seed7"),
        ([], "sample", {"train": 2000, "test": 300}, {"seed": 3}, "derived/sample2000-300-seed3"),
        ([], "pca", {}, {"svd_solver": "randomized"}, "derived/pca50-randomized"),
        ([], "pca", {"svd_solver": "randomized"}, {"seed": 5}, "derived/pca50-randomized-seed5"),
        ([], "pca", {"whiten": True}, {"svd_solver": "auto"}, "derived/pca50w-auto"),
        (AUGMENTED, "pca", {"fit_on": "originals"}, {"fit_on": "all"}, "derived/aug7x-s1c-r10+pca50-fitall"),
        ([], "downscale", {"factor": 7}, {"factor": 8}, "derived/down4-factor8"),
        ([], "blur", {}, {"sigma": 1.0000001}, "derived/blur1.0000001"),
        ([], "rotate", {"degrees": 12.5}, {"degrees": 12.5000001}, "derived/rot12.5000001x3"),
    ],
)
def test_a_parameter_that_changes_the_output_changes_the_name(before, name, params, other, expected):
    first = chain_stages([*before, (name, params)])[-1]
    second = chain_stages([*before, (name, {**params, **other})])[-1]
    assert second == expected and first != second


def test_parameters_that_leave_the_output_alone_leave_the_name_alone():
    """chunk_size only chunks the output; fit_on selects rows only of an input with augmented copies."""
    assert chain_stages([("shift", {"chunk_size": 7})]) == ["derived/shift5x"]
    assert chain_stages([("pca", {"fit_on": "originals"})]) == chain_stages([("pca", {"fit_on": "all"})])
