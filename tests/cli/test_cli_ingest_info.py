"""End-to-end tests of ``mnist-dask ingest`` and ``mnist-dask info``, run as real subprocesses.

One LocalCluster per module serves every CLI call (``--scheduler``), so each call does not
start its own cluster; one test exercises the default local-cluster start. Inputs are the
real MNIST files and small generated IDX/CSV files.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from distributed import LocalCluster
from store_damage import cli as run_mnist_dask

from mnist_dask import cli
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError

MNIST_MD5 = {  # canonical MNIST, MD5 of the uncompressed IDX content
    "train-images": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels": "a25bea736e30d166cdddb491f175f624",
    "test-images": "2646ac647ad5339dbf082846283269ea",
    "test-labels": "27ae3e4e09519cfbb04c329615203637",
}
ARRAYS = ("train/images", "train/labels", "test/images", "test/labels")
CONSOLE_SCRIPT = Path(sys.executable).parent / "mnist-dask"


# -- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def run_cli(workdir: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m mnist_dask ARGS`` in a clean environment (own cache, no inherited settings)."""

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run_mnist_dask(*args, cwd=workdir, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def ingest(run_cli, cluster) -> Callable[..., subprocess.CompletedProcess]:
    """``mnist-dask ingest --source SOURCE --store STORE --scheduler <module cluster> EXTRA...``."""

    def run(source: str, store: Path, *extra: str) -> subprocess.CompletedProcess:
        return run_cli("ingest", "--source", source, "--store", store, "--scheduler", cluster.scheduler_address, *extra)

    return run


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr


def user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Check a user error: exit 2, exactly one stderr line naming ``fragments``, no traceback."""
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("mnist-dask: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def snapshot(store: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a store: modification time (ns) and content."""
    return {
        str(p.relative_to(store)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def stored(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: group[f"raw/{name}"][:] for name in ARRAYS}


def expected_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: arrays[name.replace("/", "_")] for name in ARRAYS}


def assert_arrays_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in ARRAYS:
        assert got[name].dtype == np.uint8, name
        assert got[name].shape == want[name].shape, name
        assert got[name].tobytes() == want[name].tobytes(), name


def raw_state(store: Path) -> dict | None:
    """The raw stage's attributes, None when there is no store or no raw stage."""
    return Store(str(store)).stage_attrs("raw")


# -- real MNIST ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_store(ingest, mnist_dir, workdir) -> tuple[Path, subprocess.CompletedProcess]:
    store = workdir / "real.zarr"
    return store, ingest(f"idx:{mnist_dir}", store)


@pytest.mark.integration
def test_ingest_real_mnist_stores_the_idx_contents_byte_for_byte(real_store, mnist, mnist_dir, cluster):
    store, result = real_store
    assert_ok(result)
    assert result.stdout.strip() == f"{store}: ingested idx:{mnist_dir} (train 60,000, test 10,000 images)"
    assert f"Dask: {cluster.scheduler_address}; dashboard http://127.0.0.1:" in result.stderr
    group = zarr.open_group(str(store), mode="r", zarr_format=3)
    shapes = {
        "train/images": (60_000, 28, 28),
        "train/labels": (60_000,),
        "test/images": (10_000, 28, 28),
        "test/labels": (10_000,),
    }
    for name, shape in shapes.items():
        array = group[f"raw/{name}"]
        assert array.shape == shape and array.dtype == np.uint8, name
        assert array.chunks == (5000,) + shape[1:], name  # chunked along the first axis only
        assert len(array.compressors) >= 1, name
        assert array.nbytes_stored() < array.nbytes, name
    assert_arrays_equal(stored(store), expected_arrays(mnist))
    attrs = group["raw"].attrs["mnist_dask"]
    assert attrs["complete"] is True
    assert attrs["provenance"]["rows"] == {"train": 60_000, "test": 10_000}
    assert attrs["provenance"]["input_md5"] == MNIST_MD5


@pytest.mark.integration
def test_second_ingest_of_same_inputs_does_nothing_and_rewrites_nothing(real_store, ingest, mnist_dir):
    store, _ = real_store
    before = snapshot(store)
    result = ingest(f"idx:{mnist_dir}", store)
    assert_ok(result)
    assert "already ingested from these inputs" in result.stdout and "nothing to do" in result.stdout
    assert snapshot(store) == before


@pytest.mark.integration
def test_force_rewrites_the_store(real_store, ingest, mnist_dir, mnist):
    store, _ = real_store
    before = snapshot(store)
    chunk = "raw/train/images/c/0/0/0"
    assert chunk in before
    result = ingest(f"idx:{mnist_dir}", store, "--force")
    assert_ok(result)
    assert "ingested" in result.stdout
    after = snapshot(store)
    assert set(after) == set(before)
    rewritten = [name for name in before if "/c/" in name and after[name][0] > before[name][0]]
    assert len(rewritten) == len([name for name in before if "/c/" in name])  # every chunk file
    assert after[chunk][1] == before[chunk][1]  # same bytes
    assert_arrays_equal(stored(store), expected_arrays(mnist))
    assert Store(str(store)).is_complete("raw")


@pytest.mark.integration
def test_info_lists_arrays_completion_source_and_md5s(real_store, run_cli, mnist_dir):
    store, _ = real_store
    result = run_cli("info", store)
    assert_ok(result)
    text = result.stdout
    assert text.startswith(f"{store} (Zarr v3)")
    assert "stage raw: complete" in text
    assert f"source: idx:{mnist_dir}" in text
    for name, md5 in MNIST_MD5.items():
        assert f"input {name}: md5 {md5}" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("raw/")}
    assert set(lines) == {f"raw/{name}" for name in ARRAYS}
    assert "(60000, 28, 28)" in lines["raw/train/images"] and "chunks (5000, 28, 28)" in lines["raw/train/images"]
    assert "(10000,)" in lines["raw/test/labels"] and "chunks (5000,)" in lines["raw/test/labels"]
    assert all(" uint8 " in line for line in lines.values())


@pytest.mark.integration
def test_info_json_parses_and_describes_the_store(real_store, run_cli, mnist_dir):
    store, _ = real_store
    result = run_cli("info", "--store", store, "--json")
    assert_ok(result)
    description = json.loads(result.stdout)
    assert description["store"] == str(store) and description["zarr_format"] == 3
    raw = description["stages"]["raw"]
    assert raw["complete"] is True
    assert raw["provenance"]["source"] == f"idx:{mnist_dir}"
    assert raw["provenance"]["input_md5"] == MNIST_MD5
    assert description["arrays"]["raw/train/images"]["shape"] == [60000, 28, 28]
    assert description["arrays"]["raw/train/images"]["chunks"] == [5000, 28, 28]
    assert description["arrays"]["raw/test/labels"]["dtype"] == "uint8"
    assert description["arrays"]["raw/test/images"]["compressors"]


def test_ingest_with_default_local_cluster_shows_the_dashboard(run_cli, small, tmp_path):
    """The default path (no --scheduler) starts a LocalCluster of 2 worker processes; small data in chunks of 16
    (3 train chunks) spreads the ingest over both. Real MNIST on the default path: test_user_errors_slow, classify."""
    store = tmp_path / "local.zarr"
    source = f"idx:{small.write_idx(tmp_path / 'idx')}"
    result = run_cli("ingest", "--source", source, "--store", store, "--workers", "2", "--chunk-size", "16")
    assert_ok(result)
    assert "Dask: local cluster, 2 worker processes; dashboard http://127.0.0.1:" in result.stderr
    assert "/status" in result.stderr
    group = zarr.open_group(str(store), mode="r")
    assert group["raw/train/images"].shape == (40, 28, 28)
    np.testing.assert_array_equal(group["raw/test/labels"][:], small.arrays["test_labels"])
    np.testing.assert_array_equal(group["raw/train/images"][-30:], small.arrays["train_images"][-30:])


# -- small generated data -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_store(small, ingest, workdir) -> Path:
    """A complete store ingested from the small IDX data (chunks of 16 images); never modified."""
    store = workdir / "small.zarr"
    assert_ok(ingest(f"idx:{small.write_idx(workdir / 'small-idx')}", store, "--chunk-size", "16"))
    return store


@pytest.fixture
def existing_store(small_store, tmp_path) -> Path:
    """A private copy (file times kept) of the complete small store."""
    copy = tmp_path / "existing.zarr"
    shutil.copytree(small_store, copy)
    return copy


def test_csv_source_gives_the_same_store_as_idx_of_the_same_data(small, small_store, ingest, tmp_path):
    train_csv, test_csv = small.write_csv(tmp_path, header=True)
    store = tmp_path / "csv.zarr"
    result = ingest(f"csv:{train_csv},{test_csv}", store, "--chunk-size", "16")
    assert_ok(result)
    assert result.stdout.strip() == f"{store}: ingested csv:{train_csv},{test_csv} (train 40, test 20 images)"
    from_csv, from_idx = stored(store), stored(small_store)
    assert_arrays_equal(from_csv, from_idx)
    assert_arrays_equal(from_csv, expected_arrays(small.arrays))
    group = zarr.open_group(str(store), mode="r")
    assert group["raw/train/images"].chunks == (16, 28, 28)
    assert group["raw"].attrs["mnist_dask"]["provenance"]["input_md5"].keys() == {"train-csv", "test-csv"}


def test_csv_without_header_is_ingested(small, ingest, tmp_path):
    train_csv, test_csv = small.write_csv(tmp_path, header=False)
    store = tmp_path / "csv.zarr"
    assert_ok(ingest(f"csv:{train_csv},{test_csv}", store))
    assert_arrays_equal(stored(store), expected_arrays(small.arrays))


def test_a_file_url_store_under_a_tilde_is_written_in_the_home_folder(small, ingest, tmp_path, monkeypatch):
    """``--store file://~/s.zarr`` names the same folder as ``~/s.zarr`` (it used to fail: 'cannot create')."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    result = ingest(f"idx:{small.write_idx(tmp_path / 'idx')}", "file://~/s.zarr")
    assert_ok(result)
    assert result.stdout.startswith(f"{home / 's.zarr'}: ingested idx:")
    assert_arrays_equal(stored(home / "s.zarr"), expected_arrays(small.arrays))


def test_concurrent_ingests_on_one_scheduler_keep_their_own_data(small, ingest, tmp_path):
    datasets = [type(small)(seed=100 + i, n_train=30 + i, n_test=10 + i) for i in range(3)]
    sources = [f"idx:{d.write_idx(tmp_path / f'idx{i}')}" for i, d in enumerate(datasets)]
    stores = [tmp_path / f"s{i}.zarr" for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(ingest, sources, stores))
    for data, store, result in zip(datasets, stores, results):
        assert_ok(result)
        assert_arrays_equal(stored(store), expected_arrays(data.arrays))


def test_ingest_of_other_inputs_into_a_complete_store_needs_force(small, existing_store, ingest, tmp_path):
    other = small.write_csv(tmp_path)
    before = snapshot(existing_store)
    user_error(
        ingest(f"csv:{other[0]},{other[1]}", existing_store),
        str(existing_store),
        "already holds MNIST ingested from other inputs",
        "--force",
    )
    assert snapshot(existing_store) == before


def test_force_with_other_images_drops_the_derived_stages_made_from_the_old_ones(
    small, existing_store, run_cli, cluster, tmp_path
):
    """``ingest --force`` of other images on the default local cluster: the derived stages made from the old
    images are dropped and the line says so (they stayed 'complete' over the new images). The two derived
    stages are made on the module's cluster (no LocalCluster start of their own)."""
    local = ("--store", existing_store, "--workers", "1")
    on_module_cluster = ("--store", existing_store, "--scheduler", cluster.scheduler_address)
    assert_ok(run_cli("transform", "deskew", *on_module_cluster))
    assert_ok(run_cli("transform", "shift", "--input", "derived/deskew", *on_module_cluster))
    other = type(small)(seed=7, n_train=25, n_test=9).write_idx(tmp_path / "other")
    result = run_cli("ingest", "--source", f"idx:{other}", "--force", *local)
    assert_ok(result)
    assert result.stdout.strip().endswith("; dropped 2 derived stages made from the images it replaced")
    assert Store(str(existing_store)).stages() == ["raw"]
    assert "derived/" not in run_cli("info", existing_store).stdout


def test_interrupted_ingest_shows_incomplete_and_is_redone(small, existing_store, ingest, run_cli, mnist_dir):
    Store(str(existing_store)).begin_stage("raw")  # what a run killed after marking the stage started leaves
    result = run_cli("info", existing_store)
    assert_ok(result)
    assert "stage raw: INCOMPLETE" in result.stdout
    assert json.loads(run_cli("info", existing_store, "--json").stdout)["stages"]["raw"]["complete"] is False
    with pytest.raises(UserError) as exc:
        Store(str(existing_store)).read("raw/train/images")
    assert "stage 'raw' is incomplete" in str(exc.value) and str(existing_store) in str(exc.value)

    folder = small.write_idx(existing_store.parent / "again")
    assert_ok(ingest(f"idx:{folder}", existing_store, "--chunk-size", "16"))
    assert (
        Store(str(existing_store)).read("raw/train/labels").compute().tolist() == small.arrays["train_labels"].tolist()
    )


# -- bad input ----------------------------------------------------------------------------
def _idx_case(**overrides: Callable) -> Callable:
    def build(small, folder: Path) -> str:
        replaced = {key: make(small) for key, make in overrides.items() if key != "omit"}
        omit = overrides["omit"](small) if "omit" in overrides else ()
        return f"idx:{small.write_idx(folder / 'idx', overrides=replaced, omit=omit)}"

    return build


def _csv_case(split: str, edit: Callable[[str], str]) -> Callable:
    def build(small, folder: Path) -> str:
        train_csv, test_csv = small.write_csv(folder / "csv")
        path = train_csv if split == "train" else test_csv
        path.write_text(edit(path.read_text()))
        return f"csv:{train_csv},{test_csv}"

    return build


def _edit_line(number: int, change: Callable[[list[str]], None]) -> Callable[[str], str]:
    def edit(text: str) -> str:
        lines = text.splitlines()
        cells = lines[number - 1].split(",")
        change(cells)
        lines[number - 1] = ",".join(cells)
        return "\n".join(lines) + "\n"

    return edit


def _set(index: int, value: str) -> Callable[[list[str]], None]:
    return lambda cells: cells.__setitem__(index, value)


def _bad_labels(small):
    labels = small.arrays["train_labels"].copy()
    labels[5] = 12
    return small.labels_bytes(labels, gz=True)


BAD_INPUTS = {
    "missing-idx-file": (_idx_case(omit=lambda s: ("test-labels",)), ["idx", "missing file t10k-labels-idx1-ubyte"]),
    "missing-csv-file": (
        lambda small, folder: f"csv:{folder}/absent-train.csv,{small.write_csv(folder)[1]}",
        ["absent-train.csv", "no such file"],
    ),
    "wrong-idx-magic": (
        _idx_case(**{"train-images": lambda s: s.images_bytes(s.arrays["train_images"], magic=0x802, gz=True)}),
        ["train-images-idx3-ubyte.gz", "wrong IDX magic number 0x00000802"],
    ),
    "truncated-gzip": (
        _idx_case(**{"test-images": lambda s: s.images_bytes(s.arrays["test_images"], gz=True)[:3000]}),
        ["t10k-images-idx3-ubyte.gz", "truncated or corrupt gzip data"],
    ),
    "header-size-mismatch": (
        _idx_case(**{"train-images": lambda s: s.images_bytes(s.arrays["train_images"], dims=(41, 28, 28), gz=True)}),
        ["train-images-idx3-ubyte.gz", f"header sizes promise {41 * 784} data bytes", f"holds {40 * 784}"],
    ),
    "count-mismatch": (
        _idx_case(**{"test-labels": lambda s: s.labels_bytes(s.arrays["test_labels"][:19], gz=True)}),
        ["t10k-images-idx3-ubyte.gz: 20 images but", "t10k-labels-idx1-ubyte.gz has 19 labels"],
    ),
    "label-out-of-range": (
        _idx_case(**{"train-labels": _bad_labels}),
        ["train-labels-idx1-ubyte.gz", "label 12 at row 5 is outside 0-9"],
    ),
    "empty-idx-file": (_idx_case(**{"test-labels": lambda s: b""}), ["t10k-labels-idx1-ubyte.gz", "empty file"]),
    "csv-column-count": (
        _csv_case("train", _edit_line(3, lambda cells: cells.pop())),
        ["train.csv", "line 3 has 784 columns, expected 785"],
    ),
    "csv-non-integer": (_csv_case("test", _edit_line(7, _set(100, "4.5"))), ["test.csv", "non-integer value"]),
    "csv-pixel-range": (
        _csv_case("train", _edit_line(2, _set(10, "300"))),
        ["train.csv", "pixel 300 at line 2, column 11 is outside 0-255"],
    ),
    "csv-label-range": (_csv_case("test", _edit_line(4, _set(0, "10"))), ["test.csv", "label 10 at line 4"]),
    "empty-csv-file": (_csv_case("test", lambda text: ""), ["test.csv", "empty file"]),
    "unknown-source": (lambda small, folder: "hdf5:mnist.h5", ["--source: hdf5:mnist.h5", "unknown source"]),
}


@pytest.fixture(scope="module")
def bad_runs(small, ingest, small_store, tmp_path_factory) -> dict[str, dict]:
    """Every bad input, ingested into a new store and (with --force) into a copy of a complete store.

    The CLI calls run three at a time (each is a separate process on the shared scheduler); the
    tests below check their outcomes one case at a time.
    """
    runs = {}
    for case, (build, _) in BAD_INPUTS.items():
        folder = tmp_path_factory.mktemp(case)
        existing = folder / "existing.zarr"
        shutil.copytree(small_store, existing)
        runs[case] = {
            "source": build(small, folder),
            "new": folder / "new.zarr",
            "existing": existing,
            "before": snapshot(existing),
            "attrs_before": raw_state(existing),
        }
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for run in runs.values():
            run["new_result"] = pool.submit(ingest, run["source"], run["new"])
            run["existing_result"] = pool.submit(ingest, run["source"], run["existing"], "--force")
        for run in runs.values():
            run["new_result"], run["existing_result"] = run["new_result"].result(), run["existing_result"].result()
    return runs


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_and_creates_no_complete_store(case, bad_runs):
    run = bad_runs[case]
    user_error(run["new_result"], *BAD_INPUTS[case][1])
    attrs = raw_state(run["new"])
    assert attrs is None or not attrs.get("complete")
    assert not Store(str(run["new"])).is_complete("raw")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_with_force_leaves_an_existing_store_unchanged(case, bad_runs, small):
    run = bad_runs[case]
    user_error(run["existing_result"], *BAD_INPUTS[case][1])
    assert snapshot(run["existing"]) == run["before"]
    assert raw_state(run["existing"]) == run["attrs_before"] and run["attrs_before"]["complete"] is True
    assert_arrays_equal(stored(run["existing"]), expected_arrays(small.arrays))


def test_unreachable_scheduler_fails_in_one_line_within_the_timeout(small, run_cli, tmp_path):
    folder = small.write_idx(tmp_path / "idx")
    store = tmp_path / "s.zarr"
    started = time.monotonic()
    result = run_cli(
        "ingest",
        "--source",
        f"idx:{folder}",
        "--store",
        store,
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--connect-timeout",
        "2",
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mnist-dask: error: scheduler tcp://127.0.0.1:1: cannot connect within 2s")
    assert elapsed < 60
    assert not store.exists()


# -- info and help ------------------------------------------------------------------------
def test_info_on_a_missing_store_fails_in_one_line(run_cli, tmp_path):
    missing = tmp_path / "nothing.zarr"
    result = run_cli("info", missing)
    assert result.returncode == 2
    assert result.stderr == f"mnist-dask: error: {missing}: no Zarr store here (run 'mnist-dask ingest' first)\n"
    assert result.stdout == ""
    assert not missing.exists()


def _subcommand_paths(group: click.Group | None = None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command of the CLI, found from its click groups."""
    group = group or cli.cli
    paths = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if isinstance(sub, click.Group):
            paths += _subcommand_paths(sub, prefix + (name,))
        else:
            paths.append(prefix + (name,))
    return paths


def test_the_cli_has_ingest_and_info_subcommands():
    assert {("ingest",), ("info",)} <= set(_subcommand_paths())


@pytest.mark.parametrize("command", _subcommand_paths(), ids=lambda p: " ".join(p) or "mnist-dask")
def test_help_works_on_every_subcommand(command):
    done = CliRunner().invoke(cli.cli, [*command, "--help"], prog_name="mnist-dask")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Usage: mnist-dask {' '.join(command)}".rstrip())


@pytest.mark.parametrize("command", [(), ("ingest",), ("info",)], ids=["mnist-dask", "ingest", "info"])
def test_console_script_help_exits_0(command):
    result = subprocess.run([str(CONSOLE_SCRIPT), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: mnist-dask")
    if command == ("ingest",):
        for option in (
            "--source",
            "--store",
            "--scheduler",
            "--workers",
            "--connect-timeout",
            "--force",
            "--chunk-size",
        ):
            assert option in result.stdout
