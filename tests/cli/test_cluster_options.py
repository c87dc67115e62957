"""Cluster connection: a local cluster listens on loopback only; bad addresses fail fast and clearly."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from mnist_dask.cluster import ClusterOptions, connect
from mnist_dask.errors import UserError


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
