"""A Dask preload that every local worker process runs as it starts, restarts by its nanny included.

It makes the worker ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and the
command alone answers it (one line, then it closes the cluster), not each worker with a traceback. It also keeps
dask.array from importing pydata/sparse in the worker (:mod:`mnist_dask.lean_imports`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from mnist_dask.lean_imports import skip_sparse_arrays


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (only the main thread may set a signal handler); skip sparse arrays."""
    skip_sparse_arrays()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
