"""A submitted driver whose worker was stopped under it, told apart from one whose scheduler went away.

A submitted driver runs as a task on a worker, with that worker's client. When the worker is stopped or killed, it
closes that client and the driver's futures are cancelled, which reads like a lost scheduler; but the scheduler
still holds the driver task and starts it again on the next free worker, so the run is queued again, not failed.
When the scheduler itself goes away, the workers close their clients too: then the run failed, and nothing will
start it again. Which one it was, only the scheduler's address can tell.
"""

from __future__ import annotations

import socket
from typing import Any

_CLOSED = ("closing", "closed")  # a Client's status once closed by its worker ("connecting": its scheduler lost)


def requeued_note(client: Any, stage: object) -> str | None:
    """When this driver runs on a worker that closed its client while the scheduler still answers: the record's note
    (the run is queued again on the scheduler). Otherwise None: not a submitted driver, or the scheduler is gone."""
    if client is None or getattr(client, "status", None) not in _CLOSED:
        return None
    worker = _own_worker()
    if worker is None or not scheduler_answers(worker.scheduler.address):  # not submitted, or the scheduler is gone
        return None
    during = f" during {stage}" if stage else ""
    return (
        f"the worker {worker.address} running the run's driver was stopped or killed{during} (the scheduler "
        f"{worker.scheduler.address} still answers); the scheduler starts the driver again on the next free worker, "
        "resuming from the stages kept in the store"
    )


def own_worker_scheduler() -> str | None:
    """The scheduler address of the worker this driver runs on (a closed client no longer knows it); None off one."""
    worker = _own_worker()
    return None if worker is None else str(worker.scheduler.address)


def _own_worker() -> Any:
    """The worker running this code, or None (a driver of its own)."""
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def scheduler_answers(address: str, timeout: float = 0.5) -> bool:
    """Whether the scheduler at ``address`` still accepts connections: at once, since the worker stopping under the
    driver may exit any moment. Protocols other than tcp/tls cannot be probed from here: assumed to answer."""
    from distributed.comm.addressing import parse_address, parse_host_port

    protocol, location = parse_address(address)
    if protocol not in ("tcp", "tls"):
        return True
    host, port = parse_host_port(location)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True
