"""How to reach the cluster, as the user chose it: kept free of distributed, so a command can describe and check
its options before loading Dask (see mnist_dask.cluster for connecting)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ClusterOptions:
    """An existing scheduler, or the shape of a local cluster; and how chatty the connection is."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    connect_timeout: float = 10.0
    dashboard: str = "127.0.0.1:8787"
    quiet: bool = False
    needs_workers: bool = True  # the command computes: an existing scheduler must have workers that can run our tasks
    verbose: bool = False  # show Dask's own log messages, the local workers' included
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def local(self) -> bool:
        """True when no scheduler is named (option, DASK_SCHEDULER_ADDRESS or dask config): work runs here."""
        import dask.config

        return not (self.scheduler or dask.config.get("scheduler-address", None))

    def options(self, quiet: bool = False, needs_workers: bool = True) -> ClusterOptions:
        """These options, announcing the dashboard or not (``quiet``), and waiting for workers or not
        (``needs_workers`` False: a command that only reads the scheduler's records)."""
        return replace(self, quiet=quiet, needs_workers=needs_workers)
