"""Cluster connection: a local cluster listens on loopback only; bad addresses fail fast and clearly."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import pytest

from mnist_dask.cluster import ClusterOptions, connect, lost_scheduler_error
from mnist_dask.errors import ClusterLostError, UserError


def test_local_cluster_scheduler_workers_and_dashboard_bind_to_loopback_only():
    with connect(ClusterOptions(workers=2, dashboard="127.0.0.1:0", quiet=True)) as client:
        info = client.scheduler_info()
        assert urlparse(info["address"]).hostname == "127.0.0.1"
        assert {urlparse(address).hostname for address in info["workers"]} == {"127.0.0.1"}
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        assert len(info["workers"]) == 2


def test_unreachable_scheduler_fails_within_the_connect_timeout():
    started = time.monotonic()
    with pytest.raises(UserError, match=r"scheduler tcp://127.0.0.1:1: cannot connect within 2s"):
        with connect(ClusterOptions(scheduler="tcp://127.0.0.1:1", connect_timeout=2)):
            pass
    assert time.monotonic() - started < 30


def test_losing_the_local_cluster_is_one_line_for_the_command_and_one_naming_the_stage_for_a_run_record():
    """The command's line names the local cluster and says to run the command again; a run's record (the same
    builder, as the job driver calls it) names the scheduler's address and the stage, and says to run the job again."""
    with pytest.raises(ClusterLostError) as lost:
        with connect(ClusterOptions(workers=1, quiet=True)) as client:
            address = client.scheduler.address
            recorded = str(lost_scheduler_error(client, "predict"))
            client.cluster.close()  # the scheduler goes away under the command
            client.submit(sum, [1, 2]).result()
    assert re.fullmatch(  # (the client's error, named by its type: ClosedClientError, CancelledError, ...)
        r"lost the connection to the Dask scheduler of the local cluster \(\w+\); "
        r"completed stages are kept in the store, run the command again to resume",
        str(lost.value),
    ), lost.value
    assert recorded == (
        f"lost the connection to the Dask scheduler {address} during predict; "
        "completed stages are kept in the store, run the job again to resume"
    )


def _sigint_ignored() -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_local_worker_its_nanny_restarts_still_ignores_ctrl_c():
    """Ctrl-C is the command's to answer: a worker restarted after a crash must not answer it too."""
    import os
    import signal

    with connect(ClusterOptions(workers=1, dashboard="127.0.0.1:0", quiet=True)) as client:
        assert set(client.run(_sigint_ignored).values()) == {True}
        ((address, first),) = client.run(os.getpid).items()
        os.kill(first, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        deadline = time.monotonic() + 60
        while list(client.scheduler_info()["workers"]) in ([], [address]):
            assert time.monotonic() < deadline, "the nanny did not restart its worker"
            time.sleep(0.2)
        assert set(client.run(_sigint_ignored).values()) == {True}
        (restarted,) = client.run(os.getpid).values()
        os.kill(restarted, signal.SIGINT)
        time.sleep(1)
        assert set(client.run(os.getpid).values()) == {restarted}, "the restarted worker died of Ctrl-C"


@pytest.mark.parametrize(
    ("configured", "argv", "preload_argv"),
    [
        (None, None, []),
        ("my.preload", [], []),
        (["a", "b"], ["--x", "1"], ["--x", "1"]),  # one flat list: distributed gives it to every preload
        (["a"], [["--x", "1"]], [["--x", "1"], []]),  # one list per preload: ours takes none
    ],
)
def test_our_worker_preload_comes_after_those_dask_config_names_with_their_arguments(configured, argv, preload_argv):
    import dask
    from distributed.preloading import process_preloads

    from mnist_dask.cluster import WORKER_SETUP, _worker_preloads

    with dask.config.set({"distributed.worker.preload": configured, "distributed.worker.preload-argv": argv}):
        given = _worker_preloads()
    kept = [configured] if isinstance(configured, str) else list(configured or [])
    assert given == {"preload": [*kept, WORKER_SETUP], "preload_argv": preload_argv}
    names = [preload.name for preload in process_preloads(None, [WORKER_SETUP] * len(given["preload"]), preload_argv)]
    assert len(names) == len(given["preload"])  # distributed pairs each preload with its arguments
