"""The advice of the one line for local workers killed running the same task: it must fit the options given."""

from __future__ import annotations

from distributed.scheduler import KilledWorker

from mnist_dask.cluster import _killed_worker_message
from mnist_dask.cluster_options import ClusterOptions


def killed() -> KilledWorker:
    """What distributed raises when the workers running a task died on each of its 3 + 1 tries."""
    return KilledWorker("('predict-abc', 0)", "tcp://127.0.0.1:1", allowed_failures=3)


def test_an_explicit_limit_asks_for_a_larger_one_whatever_the_number_of_workers() -> None:
    for workers in (1, 4):
        line = _killed_worker_message(killed(), ClusterOptions(workers=workers, memory_limit="3GB"))
        assert "killed 4 times" in line and "--memory-limit 6GB" in line and "--workers" not in line, line


def test_a_shared_auto_limit_asks_for_fewer_workers_and_threads_only_when_there_are_several() -> None:
    line = _killed_worker_message(killed(), ClusterOptions(workers=4, threads_per_worker=2))
    assert "the local workers ran out of memory" in line and "fewer --workers" in line, line
    assert "fewer --threads-per-worker" in line, line
    alone = _killed_worker_message(killed(), ClusterOptions(workers=1))
    assert "--workers" not in alone and "--threads-per-worker" not in alone and "more" in alone, alone
