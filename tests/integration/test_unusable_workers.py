"""A scheduler whose workers cannot run our tasks: none at all, workers without mnist_dask, workers that die on
every try. Each is one line naming the scheduler, never a command that waits forever or a traceback.

On real ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1, through the CLI where a user meets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import DaskProcesses, SmallMnist

from mnist_dask.cluster import ClusterOptions, connect
from mnist_dask.errors import UserError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
JOB = str(REPO / "jobs" / "knn_baseline.toml")
# a hang, before the fix, shows as this timeout expiring
HANG = 120


def _cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    command = [sys.executable, "-m", "mnist_dask", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=HANG, env=env, cwd=cwd)


def _one_line(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one error line (exit 2, no traceback), checked to hold every fragment."""
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    return done.stderr


def _ingest_is_refused(cluster: DaskProcesses, tmp_path: Path, *fragments: str) -> None:
    """An ingest on the cluster is the one line holding every fragment, and creates no store."""
    store = tmp_path / "m.zarr"
    idx = SmallMnist().write_idx(tmp_path / "idx")
    _one_line(_cli("ingest", "--store", store, "--source", f"idx:{idx}", "--scheduler", cluster.address), *fragments)
    assert not store.exists()


@pytest.fixture(scope="module")
def no_workers() -> Iterator[DaskProcesses]:
    """A scheduler alone."""
    cluster = DaskProcesses(n_workers=0)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.parametrize("command", ["run", "submit", "ingest"])
def test_a_scheduler_without_workers_is_one_line_naming_it(command, no_workers, tmp_path):
    store = tmp_path / "mnist.zarr"
    idx = SmallMnist().write_idx(tmp_path / "idx")
    args = {"run": ["run", JOB], "submit": ["submit", JOB], "ingest": ["ingest"]}[command]
    done = _cli(
        *args, "--store", store, "--source", f"idx:{idx}", "--scheduler", no_workers.address, "--connect-timeout", 2
    )
    _one_line(done, f"scheduler {no_workers.address}: no worker joined within 2s", "--connect-timeout")
    assert not store.exists()


def test_status_and_runs_still_answer_from_a_scheduler_without_workers(no_workers, tmp_path):
    """Reading the scheduler's records needs no worker: these do not wait for one."""
    listed = _cli("runs", "--scheduler", no_workers.address, "--runs-dir", tmp_path, "--connect-timeout", 2)
    assert listed.returncode == 0 and not listed.stderr, listed.stderr


def test_workers_that_cannot_import_mnist_dask_are_one_line_not_a_hang(tmp_path):
    """Such a worker closes on the first task it is sent (it cannot unpickle it): the command would wait forever."""
    fake = tmp_path / "elsewhere" / "mnist_dask"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no mnist_dask in this environment')\n")
    cluster = DaskProcesses(n_workers=1, worker_env={"PYTHONPATH": str(fake.parent)})
    try:
        idx = SmallMnist().write_idx(tmp_path / "idx")
        done = _cli("ingest", "--store", tmp_path / "m.zarr", "--source", f"idx:{idx}", "--scheduler", cluster.address)
        _one_line(done, f"scheduler {cluster.address}: 1 of 1 workers cannot import mnist_dask", "no mnist_dask in")
    finally:
        cluster.close()


def test_workers_of_another_mnist_dask_version_are_one_line_naming_both_versions(tmp_path):
    """One of two workers imports mnist_dask as another release would: the same code under another version number
    (a shadow package whose modules are this checkout's). Its tasks would run, so the mismatch would go unseen."""
    import mnist_dask

    shadow = tmp_path / "elsewhere" / "mnist_dask"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        f'__version__ = "0.0.1+elsewhere"\n__path__.append({str(Path(mnist_dask.__file__).parent)!r})\n'
    )
    cluster = DaskProcesses(n_workers=1)
    dask = str(Path(sys.executable).with_name("dask"))
    other = subprocess.Popen(
        [dask, "worker", cluster.address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(shadow.parent)},
    )
    try:
        cluster.wait_for_workers(2)
        _ingest_is_refused(
            cluster,
            tmp_path,
            f"scheduler {cluster.address}: 1 of 2 workers run another mnist-dask version",
            f": 0.0.1+elsewhere; this command: {mnist_dask.__version__})",
            f"install mnist-dask {mnist_dask.__version__} where the workers run",
        )
    finally:
        other.terminate()
        other.wait(timeout=60)
        cluster.close()


def test_workers_of_the_same_version_with_other_source_files_are_one_line_naming_both_codes(tmp_path):
    """A worker imports a copy of this checkout with one module edited (as an editable install at another commit):
    the version string is the same, so only the source digest tells them apart."""
    import shutil

    import mnist_dask
    from mnist_dask.code_digest import code_digest

    copy = tmp_path / "elsewhere" / "mnist_dask"
    shutil.copytree(Path(mnist_dask.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "neighbors" / "knn.py", "a") as module:
        module.write("# edited at another commit\n")
    cluster = DaskProcesses(n_workers=1, worker_env={"PYTHONPATH": str(copy.parent)})
    try:
        _ingest_is_refused(
            cluster,
            tmp_path,
            f"scheduler {cluster.address}: 1 of 1 workers run mnist-dask {mnist_dask.__version__} from other source",
            f"; this command: code {code_digest()}); install the same mnist-dask where the workers run",
        )
    finally:
        cluster.close()


def test_workers_dying_on_every_try_of_a_task_are_one_line_naming_the_scheduler(dask_processes):
    """distributed gives up after its allowed failures (KilledWorker): that is the command's one line."""
    with pytest.raises(UserError) as caught:
        with connect(ClusterOptions(scheduler=dask_processes.address, quiet=True)) as client:
            client.submit(os._exit, 1, pure=False).result()
    message = str(caught.value)
    assert message.startswith(f"scheduler {dask_processes.address}: its workers died 4 times running the same task")
    assert "\n" not in message
    dask_processes.wait_for_workers(2)
