"""A local disk with little room, on a real tmpfs: the warning before a write, and the disk a full one names.

The 'it may not fit' warning counts the room a --force rewrite frees (the old stage is cleared
first): a raw stage of random pixels, which do not compress, fills most of the disk, and rewriting
it with ``ingest --force`` fits in the room the old arrays leave.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SmallMnist
from user_errors import Workspace, mount_tmpfs, unmount

from mnist_dask.cli.errors import Circumstances, _culprit

ROOM_LEFT = 64 * 1024  # bytes left free after the first ingest: far less than the stage's 392,000


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    problem = mount_tmpfs(disk, "2m")
    if problem:
        pytest.skip(problem)
    try:
        yield disk
    finally:
        unmount(disk)


def test_a_forced_rewrite_counts_the_room_its_old_stage_frees(tmp_path, small_disk):
    ws = Workspace(tmp_path)  # for its clean-environment CLI runner only
    idx = SmallMnist(n_train=400, n_test=100).write_idx(tmp_path / "idx-500")
    store = small_disk / "s.zarr"
    ingest = ("ingest", "--source", f"idx:{idx}", "--store", store, "--workers", "1", "--chunk-size", "100")
    first = ws.cli(*ingest)
    assert first.returncode == 0, first.stderr
    assert "may not fit" not in first.stderr
    with open(small_disk / "filler", "wb") as filler:
        filler.write(b"\0" * (shutil.disk_usage(small_disk).free - ROOM_LEFT))
    assert shutil.disk_usage(small_disk).free < 500 * 784  # the new stage alone would not fit in the room left

    again = ws.cli(*ingest, "--force")

    assert again.returncode == 0, again.stderr
    assert "may not fit" not in again.stderr, again.stderr


def test_a_full_disk_is_found_behind_a_tilde_the_shell_did_not_expand(small_disk, monkeypatch):
    """$MNIST_DASK_STORE=~/s.zarr reaches us with its '~': the full disk is the home folder's."""
    monkeypatch.setenv("HOME", str(small_disk))
    known = Circumstances(store="the store", writes=["~/s.zarr"])
    assert _culprit(errno.ENOSPC, known) == "~/s.zarr"
