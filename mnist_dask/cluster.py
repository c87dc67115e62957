"""Connect to a Dask cluster (or start a local one), show its dashboard, run work with progress.

An address comes from ``--scheduler``, else dask.config's ``scheduler-address`` (which
``DASK_SCHEDULER_ADDRESS`` sets). Without one, a ``LocalCluster`` of worker processes
bound to 127.0.0.1 is started and closed again when the command ends. Every way of
failing to reach a scheduler (refused, nothing answering, something else listening, a
malformed address) is one :class:`UserError` naming the address and where it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import dask
import dask.config
from distributed import Client, LocalCluster, span
from distributed.diagnostics.progressbar import TextProgressBar
from distributed.security import Security

from mnist_dask import __version__
from mnist_dask.cluster_options import ClusterOptions
from mnist_dask.code_digest import code_digest
from mnist_dask.errors import ClusterLostError, UserError

__all__ = ["ClusterOptions", "connect", "run_stage", "scheduler_address"]

#: Dashboard notices of clients from :func:`connect`, printed when their first stage starts.
_PENDING_ANNOUNCEMENTS: dict[str, str] = {}
#: The options of the local clusters :func:`connect` started, and the names of the schedulers it connected to
#: (by client id): a task's killed workers are explained in their terms.
_LOCAL_OPTIONS: dict[str, ClusterOptions] = {}
_SCHEDULER_NAMES: dict[str, str] = {}
_CHATTY_LOGGERS = ("distributed", "bokeh", "tornado", "asyncio")
WORKER_SETUP = "mnist_dask.worker_setup"  # the preload each local worker runs as it starts


def scheduler_address(given: str | None) -> str | None:
    """The scheduler to use: the given address, else dask.config's (DASK_SCHEDULER_ADDRESS), else None."""
    return given or dask.config.get("scheduler-address", None)


def address_origin(given: str | None) -> str:
    """Where :func:`scheduler_address` found its address, for messages: the option, the variable or the config."""
    if given:
        return "--scheduler"
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return "DASK_SCHEDULER_ADDRESS"
    return "dask config 'scheduler-address'"


def quiet_dask(verbose: bool) -> None:
    """Silence Dask's own chatter (port fallbacks, graph sizes, task failures) unless ``verbose``.

    Failures reach the user as one line from the command; the loggers' copies are noise.
    """
    if verbose:
        return
    for name in [*_CHATTY_LOGGERS, *(n for n in logging.root.manager.loggerDict if n.startswith(_CHATTY_LOGGERS))]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"distributed(\..*)?$")


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """Yield a Client on the chosen cluster; close whatever this call started."""
    quiet_dask(options.verbose)
    address = scheduler_address(options.scheduler)
    name = _scheduler_name(address, address_origin(options.scheduler)) if address else "the local cluster"
    if address:
        client = _connect_existing(address, options.connect_timeout, _security(options), name)
        cluster = None
        if options.needs_workers:
            try:
                _check_workers(client, address, name, options.connect_timeout)
            except BaseException:
                client.close()
                raise
    else:
        with _workers_ignore_interrupts():
            cluster = _local_cluster(options)
        client = Client(cluster)
        _LOCAL_OPTIONS[client.id] = options
    _SCHEDULER_NAMES[client.id] = name
    if not options.quiet:  # announced with the first real work, so a user error stays one line
        workers = len(client.scheduler_info()["workers"])
        where = address or f"local cluster, {workers} worker process{'' if workers == 1 else 'es'}"
        _PENDING_ANNOUNCEMENTS[client.id] = f"Dask: {where}; dashboard {client.dashboard_link}"
    try:
        yield client
    except Exception as exc:
        killed = killed_worker_error(client, exc)
        if killed is not None:
            raise killed from None
        if not lost_scheduler(client, exc):
            raise
        scheduler = address or "of the local cluster"
        raise lost_scheduler_error(client, cause=exc, scheduler=scheduler, rerun="the command") from None
    finally:
        _PENDING_ANNOUNCEMENTS.pop(client.id, None)
        _LOCAL_OPTIONS.pop(client.id, None)
        _SCHEDULER_NAMES.pop(client.id, None)
        client.close()
        if cluster is not None:
            cluster.close()


def lost_scheduler(client: Client, exc: BaseException) -> bool:
    """Whether ``exc`` comes of the client losing its scheduler (its futures cancelled for that reason)."""
    return isinstance(exc, Exception) and (client.status != "running" or "scheduler-connection-lost" in str(exc))


def lost_scheduler_error(
    client: Client,
    stage: str | None = None,
    *,
    cause: BaseException | None = None,
    scheduler: str | None = None,
    rerun: str = "the job",
) -> ClusterLostError:
    """The one line for work whose scheduler went away: which scheduler (``scheduler``, else the client's address),
    during which ``stage`` or of which ``cause``, that completed stages are kept, and what to ``rerun`` to resume
    (a run's record: the job; :func:`connect`'s line on stderr: the command)."""
    name = scheduler or getattr(client.scheduler, "address", None) or "of the run"
    during = f" during {stage}" if stage else ""
    of = f" ({type(cause).__name__})" if cause is not None else ""
    return ClusterLostError(
        f"lost the connection to the Dask scheduler {name}{during}{of}; "
        f"completed stages are kept in the store, run {rerun} again to resume"
    )


def _local_cluster(options: ClusterOptions) -> LocalCluster:
    """A LocalCluster of worker processes on 127.0.0.1, as ``options`` ask."""
    return LocalCluster(
        n_workers=options.workers or os.cpu_count() or 1,
        threads_per_worker=options.threads_per_worker,
        memory_limit=options.memory_limit,
        processes=True,
        host="127.0.0.1",
        dashboard_address=options.dashboard,
        # a task's error reaches the user as our one line; the workers' own report of it
        # ("Compute Failed" and a traceback) is log noise unless asked for with --verbose
        silence_logs=logging.WARNING if options.verbose else logging.CRITICAL,
        **_worker_preloads(),  # a worker its nanny restarts ignores Ctrl-C too
    )


def _worker_preloads() -> dict[str, list[Any]]:
    """``preload`` and ``preload_argv`` for the local workers: those dask.config names, then ours.

    Per-preload argument lists (a list of lists) get an empty one for ours; a flat list is
    given to every preload by distributed, and ours ignores it.
    """
    configured = dask.config.get("distributed.worker.preload", default=[]) or []
    argv = list(dask.config.get("distributed.worker.preload-argv", default=[]) or [])
    if argv and not isinstance(argv[0], str):
        argv.append([])
    preloads = [configured] if isinstance(configured, str) else list(configured)
    return {"preload": [*preloads, WORKER_SETUP], "preload_argv": argv}


@contextlib.contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """Worker processes started here ignore SIGINT from their first instruction: a terminal's Ctrl-C
    reaches the whole process group, and the command alone should answer it (one line, then it closes
    the cluster), not each worker with a KeyboardInterrupt traceback. The command's own handler is
    back once the workers are up; a worker its nanny restarts later ignores SIGINT by the
    :mod:`mnist_dask.worker_setup` preload."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_stage(
    client: Client, label: str, collections: Sequence[Any], show_progress: bool | None = None, announce: bool = True
) -> list[Any]:
    """Compute dask collections on the cluster under a named span, showing where the work stands.

    On a terminal, a progress bar labelled with the stage; otherwise one line when the stage
    starts and one when it ends. The first announcing stage prints the dashboard link;
    validation steps pass ``announce=False`` and print nothing.
    """
    terminal = sys.stderr.isatty()
    show_progress = (terminal and announce) if show_progress is None else show_progress
    if announce:
        announce_dashboard(client)
    if announce and not terminal:
        print(f"{label}: started", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with span(label):
        futures = client.compute(list(collections))
        if show_progress:
            _StageBar(label, futures)
        results = client.gather(futures)
    if announce:
        print(f"{label}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return results


def announce_dashboard(client: Client) -> None:
    """Print the cluster and its dashboard link on stderr, once per client from :func:`connect`.

    Called when work starts (not at connection), so an error found before any work stays one line.
    """
    if client.id in _PENDING_ANNOUNCEMENTS:
        print(_PENDING_ANNOUNCEMENTS.pop(client.id), file=sys.stderr, flush=True)


class _StageBar(TextProgressBar):
    """Dask's text progress bar on stderr, labelled with the stage it follows."""

    def __init__(self, label: str, futures: list[Any]) -> None:
        """Draw the bar until ``futures`` are done (blocks)."""
        self.label = label
        super().__init__(futures, complete=True)

    def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
        """One frame: ``label [#####     ]  50% 1.2 s`` over the previous one."""
        done = 1 - remaining / all if all else 1.0
        bar = "#" * int(30 * done)
        with contextlib.suppress(ValueError):
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {int(100 * done):3d}% {self.elapsed:.1f} s")
            sys.stderr.flush()

    def _draw_stop(self, **kwargs: Any) -> None:
        """Erase the bar (the stage's 'done' line replaces it)."""
        with contextlib.suppress(ValueError):
            sys.stderr.write("\33[2K\r")
            sys.stderr.flush()


def killed_worker_error(client: Client, exc: BaseException) -> UserError | None:
    """The one line for a task whose workers kept dying (distributed's KilledWorker) on ``client``'s cluster, or
    None for any other error: what the command prints, and what a run's record keeps."""
    if type(exc).__name__ != "KilledWorker":
        return None
    options = _LOCAL_OPTIONS.get(client.id)
    if options is not None:
        return UserError(_killed_worker_message(exc, options))
    address = getattr(client.scheduler, "address", None)
    return UserError(_killed_remote_worker_message(exc, _SCHEDULER_NAMES.get(client.id, f"scheduler {address}")))


def _killed_worker_message(exc: BaseException, options: ClusterOptions) -> str:
    """Why local workers keep dying: almost always memory; the advice that helps with the options given.

    An explicit --memory-limit is each worker's, whatever their number: only a larger one (or fewer threads
    sharing it) helps. With ``auto`` the workers share this machine's memory: fewer of them get more each.
    """
    from dask.utils import parse_bytes

    attempts = getattr(exc, "allowed_failures", 2) + 1
    workers = options.workers or os.cpu_count() or 1
    who = "the local worker" if workers == 1 else "the local workers"
    threads = " or fewer --threads-per-worker" if options.threads_per_worker > 1 else ""
    if options.memory_limit != "auto":
        advice = f"give each worker more (e.g. --memory-limit {_doubled(parse_bytes(options.memory_limit))}){threads}"
    elif workers > 1:
        advice = f"use fewer --workers (with --memory-limit auto they share this machine's memory){threads}"
    else:
        advice = "its worker has all of this machine's memory already: use a machine with more (or --scheduler)"
    return (
        f"--memory-limit {options.memory_limit}: {who} ran out of memory (killed {attempts} times running the "
        f"same task); {advice}"
    )


def _doubled(size: int) -> str:
    """Twice ``size`` bytes, rounded up to a round figure a person types (600MB, 8GB)."""
    if 2 * size >= 10**9:
        return f"{-(-2 * size // 10**9)}GB"
    return f"{-(-2 * size // 10**8) * 100}MB"


def _killed_remote_worker_message(exc: BaseException, name: str) -> str:
    """Workers of an existing scheduler died on every try of one task (distributed's allowed-failures)."""
    attempts = getattr(exc, "allowed_failures", 2) + 1
    task = getattr(exc, "task", None)
    return (
        f"{name}: its workers died {attempts} times running the same task"
        + (f" ({task!r})" if task is not None else "")
        + "; see the workers' logs (out of memory? mnist_dask missing or broken there?)"
    )


def _check_workers(client: Client, address: str, name: str, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) for a worker, and make sure every worker imports our mnist_dask version
    from the same source files (:func:`code_digest`: an editable install at another commit keeps its version).

    Without a worker, or with workers that cannot unpickle our tasks (which makes a worker close on
    its first task), every stage would wait forever on the scheduler; a worker with other mnist-dask code
    may compute other figures, or fail on our tasks in obscure ways.
    """
    from distributed.utils import import_term

    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise UserError(
            f"{name}: no worker joined within {timeout:g}s; start some with 'dask worker {address}' "
            "(or wait longer with --connect-timeout)"
        ) from None
    found = client.run(import_term, "mnist_dask.__version__", on_error="return")
    broken = {worker: answer for worker, answer in found.items() if isinstance(answer, BaseException)}
    if broken:
        worker, error = next(iter(broken.items()))
        raise UserError(
            f"{name}: {len(broken)} of {len(found)} workers cannot import mnist_dask (worker {worker}: "
            f"{_first_line(error)[:160]}); install mnist-dask where the workers run"
        )
    other = {worker: version for worker, version in found.items() if version != __version__}
    if other:
        worker, version = next(iter(other.items()))
        raise UserError(
            f"{name}: {len(other)} of {len(found)} workers run another mnist-dask version (worker {worker}: "
            f"{str(version)[:60]}; this command: {__version__}); install mnist-dask {__version__} where the workers run"
        )
    ours = code_digest()
    codes = client.run(code_digest, on_error="return")  # an older install without the module answers an error
    other = {worker: code for worker, code in codes.items() if code != ours}
    if other:
        worker, code = next(iter(other.items()))
        shown = code if isinstance(code, str) else "unknown"
        raise UserError(
            f"{name}: {len(other)} of {len(found)} workers run mnist-dask {__version__} from other source files "
            f"(worker {worker}: code {shown}; this command: code {ours}); install the same mnist-dask where the "
            "workers run"
        )


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


def _scheduler_name(address: str, origin: str) -> str:
    """How messages name a scheduler: its address, and where the address came from when not --scheduler."""
    return f"scheduler {address}" + ("" if origin == "--scheduler" else f" (from {origin})")


def _connect_existing(address: str, timeout: float, security: Security | None, name: str) -> Client:
    """Connect to a running scheduler, failing within ``timeout`` seconds with one line naming it.

    Dask's own connect waits for the handshake's answer without a time limit, so an HTTP
    server on that port hangs it forever, and a service that talks first (a banner) is read
    as a frame length of exabytes. So: the address is checked, the port reached (retried
    until the timeout, as a scheduler may be starting), and Dask's handshake completed, each
    bounded by the timeout, before the Client connects.
    """
    deadline = time.monotonic() + timeout
    try:
        _reach(address, deadline)
    except ValueError as exc:  # at once: not an address Dask can use
        raise UserError(f"{name}: not a usable scheduler address ({_first_line(exc)})") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot connect within {timeout:g}s ({_first_line(exc)[:160]})") from None
    try:
        asyncio.run(asyncio.wait_for(_handshake(address, security), max(0.1, deadline - time.monotonic())))
    except TimeoutError:
        raise UserError(
            f"{name}: no Dask scheduler answered within {timeout:g}s (something else listens on that port?)"
        ) from None
    except Exception as exc:  # any failure of the handshake: whatever answers does not speak Dask's protocol
        if address.startswith("tls://") and security is None:
            raise UserError(
                f"{name}: cannot connect within {timeout:g}s "
                "(a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key)"
            ) from None
        raise UserError(
            f"{name}: the service there is not a Dask scheduler (its answer is not Dask's handshake: "
            f"{type(exc).__name__})"
        ) from None
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
            return Client(address, timeout=f"{timeout}s", security=security)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise UserError(f"{name}: cannot connect within {timeout:g}s ({_first_line(exc)[:160]})") from None


def _reach(address: str, deadline: float) -> None:
    """Check the address and open (and close) a TCP connection to it, retrying refusals until ``deadline``.

    ValueError: the address is malformed; OSError: the port cannot be reached in time.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    scheme, location = parse_address(address)
    get_backend(scheme)  # ValueError for an unknown scheme
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parse_host_port(location, 8786)
    except ValueError:
        raise ValueError(f"the port of {location!r} is not a number") from None
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())).close()
            return
        except OSError:
            if time.monotonic() + 0.2 > deadline:
                raise
            time.sleep(0.2)


async def _handshake(address: str, security: Security | None) -> None:
    """Open a Dask comm to ``address`` (which completes Dask's handshake) and close it."""
    from distributed.comm import connect as comm_connect

    args = (security or Security()).get_connection_args("client")
    comm = await comm_connect(address, **args)
    await comm.close()


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
