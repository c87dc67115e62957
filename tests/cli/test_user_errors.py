"""Every way a user can get ``mnist-dask`` wrong (options, paths, filesystems, object stores, schedulers,
environment variables), each through the default path: one line on stderr naming the thing, exit 2,
no traceback, no Dask log line, and the store left as it was (or incomplete and refused).

The cases are in user_errors.py; the real-MNIST ones run in tests/integration/test_user_errors_slow.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from user_errors import CASES, Case, Workspace, before, check


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("user-errors")).start()
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_user_error_is_one_line_and_leaves_the_store_safe(case: Case, ws: Workspace) -> None:
    if case.needs == "mount" and ws.no_mount:
        pytest.skip(ws.no_mount)
    ws.case = case.id
    snap = before(case, ws)
    check(case, ws, ws.cli(*case.args(ws), env=case.env, timeout=case.timeout), snap)
