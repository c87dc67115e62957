"""Two commands writing one stage of one store at once: the second waits for the first, then skips or is refused.

Every plain command starts its own LocalCluster, so only a lock the driver processes share
(an operating-system file lock beside a local store) keeps them from writing the same
stage together, which used to leave a stage marked complete whose chunks could not be read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import PROGRESS_LINE, write_idx_files

from mnist_dask.data.ingest import ingest
from mnist_dask.data.sources import Source
from mnist_dask.data.stages import stage_file_lock
from mnist_dask.data.store import Store

STAGE = "derived/shift5x"
WAITING = f"{STAGE}: waiting for another command"


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, client, mnist) -> Path:
    """A store of the first 2,000 real training and 500 test images (copied by each test)."""
    rows = {"train": 2000, "test": 500}
    folder = tmp_path_factory.mktemp("idx")
    write_idx_files(folder, {key: array[: rows[key.split("_")[0]]] for key, array in mnist.items()})
    path = tmp_path_factory.mktemp("base") / "mnist.zarr"
    ingest(Source("idx", (str(folder),)), Store(str(path)), client)
    return path


def _transform(store: Path, chunk_size: int) -> subprocess.Popen[str]:
    """``mnist-dask transform shift`` on the default path (its own LocalCluster, of one worker: what is shared is
    the driver's lock, not the workers), started and not waited for."""
    command = ["transform", "shift", "--chunk-size", str(chunk_size), "--store", str(store), "--workers", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_dask", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", "verify", str(store), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _own_lines(stderr: str) -> list[str]:
    """The stderr lines that are neither progress nor the one waiting notice."""
    return [line for line in stderr.splitlines() if not PROGRESS_LINE.match(line) and not line.startswith(WAITING)]


@pytest.mark.parametrize(
    ("sizes", "second"),
    [((700, 3000), "refused"), ((700, 700), "skipped")],
    ids=["other-parameters", "same-parameters"],
)
def test_two_transforms_started_together_write_the_stage_once_and_the_store_verifies(
    small_store, tmp_path, sizes, second
):
    """One command writes; the other waits, then is refused (other chunk size) or skips (same); verify passes."""
    store = tmp_path / "conc.zarr"
    shutil.copytree(small_store, store)
    for _ in range(2):  # twice, fresh each time: the pair overlaps on every try (cluster start-up dominates)
        shutil.rmtree(store / "derived", ignore_errors=True)
        commands = [_transform(store, size) for size in sizes]
        results = [(command.wait(timeout=300), *command.communicate()) for command in commands]
        wrote = [r for r in results if r[0] == 0 and f"wrote {STAGE}" in r[1]]
        others = [r for r in results if r not in wrote]
        assert len(wrote) == 1 and len(others) == 1, results
        code, stdout, stderr = others[0]
        assert sum(line.startswith(WAITING) for line in stderr.splitlines()) <= 1, stderr
        if second == "refused":
            assert code == 2 and stdout == "", stderr
            held, asked = sizes if f"(asked for {sizes[1]})" in stderr else sizes[::-1]  # whichever wrote first
            assert _own_lines(stderr) == [
                f"mnist-dask: error: {store}: '{STAGE}' exists with chunks of {held} rows (asked for {asked}); "
                f"pass --chunk-size {held} to use it, or --force to replace it"
            ]
        else:
            assert code == 0, stderr
            assert stdout == f"{store}: {STAGE} is up to date; nothing to do (--force recomputes)\n"
            assert _own_lines(stderr) == []
        check = _verify(store)
        assert check.returncode == 0 and "match their recorded checksums" in check.stdout, check.stdout + check.stderr
        assert not list(tmp_path.glob(".conc.zarr.*.lock"))  # released and removed


def test_a_transform_waits_while_another_process_holds_the_stage_then_writes_it(small_store, tmp_path):
    """Held by this test's process, the stage makes a command say once that it waits, and write nothing till freed."""
    store = tmp_path / "held.zarr"
    shutil.copytree(small_store, store)
    lines: list[str] = []
    with stage_file_lock(Store(str(store)), STAGE):
        command = _transform(store, 700)
        assert command.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(command.stderr or []), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and command.poll() is None and not any(WAITING in x for x in lines):
            time.sleep(0.1)
        assert command.poll() is None, lines  # still waiting, not finished
        waiting = [line.rstrip("\n") for line in lines if WAITING in line]
        assert len(waiting) == 1 and waiting[0].startswith(WAITING), lines
        assert f"(pid {os.getpid()} on {socket.gethostname()}, started " in waiting[0]
        assert waiting[0].endswith(f") writing it in {store}")
        time.sleep(2)
        assert Store(str(store)).stage_attrs(STAGE) is None  # nothing begun while the lock is held
    stdout = command.stdout.read() if command.stdout else ""
    assert command.wait(timeout=300) == 0, lines
    reader.join(timeout=10)
    assert f"wrote {STAGE}" in stdout
    assert sum(WAITING in line for line in lines) == 1
    check = _verify(store)
    assert check.returncode == 0, check.stdout + check.stderr
