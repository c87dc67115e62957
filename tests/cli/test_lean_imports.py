"""The command and its local workers load dask.array without pydata/sparse, whose import brings numba along
(dask/dask#10175): about a second of CPU per process, saved on every command. numba itself is imported only where
the compiled k-NN loops first run, not by the modules a command imports to build a job's graphs."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from mnist_dask.cli import main
from mnist_dask.cluster import connect
from mnist_dask.cluster_options import ClusterOptions

status = main(sys.argv[1:])  # a real command first: its group callback is what marks sparse absent
import dask.array as da
with connect(ClusterOptions(workers=1, dashboard=":0", quiet=True)) as client:
    assert int(da.ones(10, chunks=5).sum().compute()) == 10
    workers = client.run(lambda: ("sparse" in sys.modules and sys.modules["sparse"] is None, "numba" in sys.modules))
print(status, "sparse" in sys.modules and sys.modules["sparse"] is None, "numba" in sys.modules, *workers.values())
"""


def test_the_command_and_its_local_workers_load_dask_array_without_sparse_or_numba(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "info", "--store", str(tmp_path / "absent.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    status, command_skips, command_numba, worker = done.stdout.split(maxsplit=3)
    assert status == "2"  # info on a missing store: a user error, after the group's callback ran
    assert (command_skips, command_numba) == ("True", "False")
    assert worker.strip() == "(True, False)"


def test_the_modules_a_run_imports_leave_numba_to_the_compiled_loops_first_use():
    probe = (
        "import sys\n"
        "from mnist_dask.lean_imports import skip_sparse_arrays\n"
        "skip_sparse_arrays()\n"
        "import mnist_dask.jobs.driver, mnist_dask.experiments, mnist_dask.neighbors.knn\n"
        "before = 'numba' in sys.modules\n"
        "from mnist_dask.neighbors import compiled\n"
        "print(before, compiled.available(), 'numba' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]  # numba is a dependency of dask-ml: there when asked
