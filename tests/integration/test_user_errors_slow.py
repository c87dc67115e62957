"""The user-error cases that need real MNIST and a longer run (see tests/cli/user_errors.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from user_errors import SLOW_CASES, Case, Workspace, before, check


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("user-errors-slow")).start()
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.mark.parametrize("case", SLOW_CASES, ids=lambda case: case.id)
def test_user_error_is_one_line_and_leaves_the_store_safe(case: Case, ws: Workspace) -> None:
    ws.case = case.id
    snap = before(case, ws)
    check(case, ws, ws.cli(*case.args(ws), env=case.env, timeout=case.timeout), snap)
