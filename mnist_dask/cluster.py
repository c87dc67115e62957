"""Connect to a Dask cluster (or start a local one), show its dashboard, run work with progress.

An address comes from ``--scheduler``, else dask.config's ``scheduler-address`` (which
``DASK_SCHEDULER_ADDRESS`` sets). Without one, a ``LocalCluster`` of worker processes
bound to 127.0.0.1 is started and closed again when the command ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.config
from distributed import Client, LocalCluster, progress, span
from distributed.security import Security

from mnist_dask.errors import ClusterLostError, UserError

#: Dashboard notices of clients from :func:`connect`, printed when their first stage starts.
_PENDING_ANNOUNCEMENTS: dict[str, str] = {}


@dataclass(frozen=True)
class ClusterOptions:
    """How to reach the cluster: an existing scheduler, or the shape of a local one."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    connect_timeout: float = 10.0
    dashboard: str = "127.0.0.1:8787"
    quiet: bool = False
    verbose: bool = False  # show Dask's own log messages, the local workers' included
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def scheduler_address(given: str | None) -> str | None:
    """The scheduler to use: the given address, else dask.config's (DASK_SCHEDULER_ADDRESS), else None."""
    return given or dask.config.get("scheduler-address", None)


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """Yield a Client on the chosen cluster; close whatever this call started."""
    address = scheduler_address(options.scheduler)
    if address:
        client = _connect_existing(address, options.connect_timeout, _security(options))
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=options.workers or os.cpu_count() or 1,
            threads_per_worker=options.threads_per_worker,
            memory_limit=options.memory_limit,
            processes=True,
            host="127.0.0.1",
            dashboard_address=options.dashboard,
            # a task's error reaches the user as our one line; the workers' own report of it
            # ("Compute Failed" and a traceback) is log noise unless asked for with --verbose
            silence_logs=logging.WARNING if options.verbose else logging.CRITICAL,
        )
        client = Client(cluster)
    if not options.quiet:  # announced with the first real work, so a user error stays one line
        where = address or f"local cluster, {len(client.scheduler_info()['workers'])} worker processes"
        _PENDING_ANNOUNCEMENTS[client.id] = f"Dask: {where}; dashboard {client.dashboard_link}"
    try:
        yield client
    except Exception as exc:
        if client.status == "running" and "scheduler-connection-lost" not in str(exc):
            raise
        raise ClusterLostError(
            f"lost the connection to the Dask scheduler {address or 'of the local cluster'} "
            f"({type(exc).__name__}); completed stages are kept in the store, "
            "run the command again to resume"
        ) from None
    finally:
        _PENDING_ANNOUNCEMENTS.pop(client.id, None)
        client.close()
        if cluster is not None:
            cluster.close()


def run_stage(
    client: Client, label: str, collections: Sequence[Any], show_progress: bool | None = None, announce: bool = True
) -> list[Any]:
    """Compute dask collections on the cluster under a named span, with a terminal progress bar.

    The first announcing stage prints the dashboard link; validation steps pass ``announce=False``.
    """
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    if announce and client.id in _PENDING_ANNOUNCEMENTS:
        print(_PENDING_ANNOUNCEMENTS.pop(client.id), file=sys.stderr)
    with span(label):
        futures = client.compute(list(collections))
        if show_progress:
            progress(futures)
            print(file=sys.stderr)
        return client.gather(futures)


def _security(options: ClusterOptions) -> Security | None:
    """TLS credentials from the options, else None (dask.config's distributed.comm.tls applies)."""
    files = {"--tls-ca-file": options.tls_ca_file, "--tls-cert": options.tls_cert, "--tls-key": options.tls_key}
    if not any(files.values()):
        return None
    for flag, path in files.items():
        if not path:
            raise UserError(f"{flag} is required with the other TLS options")
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file ({flag})")
    return Security(
        tls_ca_file=options.tls_ca_file,
        tls_client_cert=options.tls_cert,
        tls_client_key=options.tls_key,
        require_encryption=True,
    )


def _connect_existing(address: str, timeout: float, security: Security | None = None) -> Client:
    """Connect to a running scheduler, failing within ``timeout`` seconds with one clear line."""
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
            return Client(address, timeout=f"{timeout}s", security=security)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:  # TypeError: tls:// without credentials
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if address.startswith("tls://") and security is None:
            reason = "a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key"
        raise UserError(f"scheduler {address}: cannot connect within {timeout:g}s ({reason[:160]})") from None
