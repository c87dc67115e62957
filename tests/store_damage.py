"""Test helpers for damaged stores: a small balanced MNIST look-alike, the CLI as a subprocess, one-line errors.

``damage`` applies one corruption (delete, truncate, flip a byte or a bit, garble) to one file
of a store; ``assert_user_error`` checks the contract of a failed command: exit 2, one
``mnist-dask: error:`` line naming what is wrong, no traceback and no Dask log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from support import PROGRESS_LINE, SmallMnist

DAMAGES = ("delete", "truncate", "flip_byte", "flip_bit", "garble", "empty")


def balanced_small_mnist() -> SmallMnist:
    """40 train / 20 test random images whose labels cycle 0-9 (4 and 2 of each digit: 2-fold CV works)."""
    small = SmallMnist()
    small.arrays["train_labels"] = (np.arange(40) % 10).astype(np.uint8)
    small.arrays["test_labels"] = (np.arange(20) % 10).astype(np.uint8)
    return small


def cli(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m mnist_dask ARGS`` in a clean environment (no inherited scheduler, source or store)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DASK_SCHEDULER_ADDRESS", "MNIST_DASK_SOURCE", "MNIST_DASK_STORE")
    }
    env["MNIST_DASK_CACHE"] = str(cwd / "cache")
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str, only_line: bool = True) -> str:
    """Exit 2 and one ``mnist-dask: error:`` line (the last on stderr) holding every fragment; no traceback.

    ``only_line``: stderr holds nothing else; otherwise the other lines may only be the
    command's own progress lines (:data:`support.PROGRESS_LINE`).
    """
    report = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == 2, report
    assert "Traceback" not in done.stderr + done.stdout, report
    assert "distributed." not in done.stderr, report
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("mnist-dask: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], report
    if only_line:
        assert lines == errors, report
    else:
        assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), report
    for fragment in fragments:
        assert fragment in errors[0], report
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content): equal snapshots mean an untouched folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def damage(path: Path, how: str, position: int, value: int) -> None:
    """Damage one file: delete it, truncate it, flip a byte or a bit, garble or empty it.

    ``position`` picks the byte (modulo the file's size) and ``value`` (1-255) the bits to flip
    or the garbage byte, so a test can draw both.
    """
    data = bytearray(path.read_bytes())
    where = position % max(len(data), 1)
    if how == "delete":
        path.unlink()
        return
    if how == "truncate":
        data = data[:where]
    elif how == "flip_byte" and data:
        data[where] ^= value
    elif how == "flip_bit" and data:
        data[where] ^= 1 << (value % 8)
    elif how == "garble":
        data = bytearray([value]) * max(len(data) // 2, 1)
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))
