"""A user error that the command line can tell without the cluster or the store is answered before dask, distributed,
zarr or matplotlib are imported (they cost a second or more of CPU per command): a refused option value, an
unknown transform parameter value, a job file that is not TOML or has an unknown key, a run without results. And
``info``, which reads only a store's metadata, never loads dask.array or distributed.

Each case is a real ``python -X importtime -m mnist_dask ...`` subprocess: its one line and exit status 2 as the
user sees them, and the modules it imported, read from the interpreter's own import log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: what only the work needs (dask.config, which says whether a scheduler is configured, is light and allowed)
HEAVY = ("dask.array", "distributed", "zarr", "matplotlib", "numba", "sparse", "scipy", "sklearn", "pydantic")


def _heavy(stderr: str) -> list[str]:
    """The modules of :data:`HEAVY` (or inside them) that ``-X importtime`` reported."""
    imported = {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return sorted(name for name in imported if any(name == h or name.startswith(h + ".") for h in HEAVY))


def _run_with_import_log(tmp_path: Path, *args: object) -> tuple[int, list[str], list[str]]:
    """(exit status, stderr lines other than the import log, heavy modules imported) of ``python -m mnist_dask
    ARGS``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_dask", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "MNIST_DASK_"))},  # no settings
    )
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    return done.returncode, lines, _heavy(done.stderr)


def _not_toml(tmp_path: Path) -> list[object]:
    (tmp_path / "job.toml").write_text("this is not = = toml\n")
    return ["run", tmp_path / "job.toml", "--store", tmp_path / "new.zarr", "--workers", "1"]


def _unknown_key(tmp_path: Path) -> list[object]:
    (tmp_path / "job.toml").write_text('experiment = "knn"\nparameters = {}\n')
    return ["run", tmp_path / "job.toml", "--store", tmp_path / "new.zarr"]


def _run_without_result(tmp_path: Path) -> list[object]:
    run = tmp_path / "runs" / "unfinished"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"run_id": "unfinished", "job": "x", "state": "running"}')
    return ["report", run]


CASES = {
    "transform-option-out-of-range": (
        lambda tmp: ["transform", "rotate", "--degrees", "400", "--store", tmp / "s.zarr", "--workers", "1"],
        "--degrees: 400.0 is not in the range",
    ),
    "transform-choice-unknown": (lambda tmp: ["transform", "shift", "--shape", "hexagon"], "--shape: 'hexagon'"),
    "job-file-not-toml": (_not_toml, "job.toml: not valid TOML"),
    "job-file-unknown-key": (_unknown_key, "job.toml: unknown key 'parameters'"),
    "report-of-an-unfinished-run": (_run_without_result, "no result.json"),
    "status-of-an-unknown-run": (lambda tmp: ["status", "nope", "--runs-dir", tmp], "nope: no such run"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_told_before_dask_is_imported(case: str, tmp_path: Path) -> None:
    make_args, fragment = CASES[case]
    status, lines, heavy = _run_with_import_log(tmp_path, *make_args(tmp_path))
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("mnist-dask: error: ") and fragment in lines[0], lines
    assert heavy == [], f"{case} imported {heavy[:8]} before refusing: {lines[0]}"


@pytest.mark.parametrize("args", [("transform", "--help"), ("transform", "pca", "--help")])
def test_transform_help_loads_no_dask(args: tuple[str, ...], tmp_path: Path) -> None:
    status, lines, heavy = _run_with_import_log(tmp_path, *args)
    assert status == 0, lines
    assert heavy == []


def test_info_on_a_store_reads_its_metadata_without_dask_array_or_distributed(small, tmp_path: Path) -> None:
    store = tmp_path / "small.zarr"
    source = f"idx:{small.write_idx(tmp_path / 'idx')}"
    made = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "ingest", "--source", source, "--store", str(store), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    status, lines, heavy = _run_with_import_log(tmp_path, "info", "--store", store)
    assert status == 0, lines
    assert [h for h in heavy if h.startswith(("dask.array", "distributed", "numba", "sparse"))] == []
