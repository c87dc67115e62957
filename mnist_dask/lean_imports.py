"""Keep ``import dask.array`` from importing pydata/sparse (and with it numba) in the processes mnist-dask owns.

dask.array imports every optional chunk-type library it can find (dask/dask#10175). pydata/sparse is installed here
only as a dependency of dask-glm (dask-ml's), and importing it imports numba: about a second of CPU in every process
that imports dask.array, the command's and each local worker's. mnist-dask never holds sparse arrays, so the command
and the workers of the local cluster it starts mark the package absent; the workers of a user's ``--scheduler`` are
the user's processes and are left as they are. numba itself is still imported where the compiled k-NN loops run.
"""

from __future__ import annotations

import sys

SKIPPED = "sparse"


def skip_sparse_arrays() -> None:
    """Make ``import sparse`` raise ImportError in this process (dask.array then registers no sparse chunk type),
    unless it was imported already."""
    sys.modules.setdefault(SKIPPED, None)  # type: ignore[arg-type]  # None in sys.modules: the import system's "absent"
