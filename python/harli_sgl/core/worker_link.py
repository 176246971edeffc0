"""WorkerLink: what the slot coordinator needs from the finetune worker, declared.

The coordinator never spawns or kills a process itself. It talks to the worker
through this interface, which the :class:`~harli_sgl.worker.supervisor.WorkerSupervisor`
implements (a supervised subprocess over ZeroMQ queues); a test or another
engine's integration can implement it as well. Messages are the typed
dataclasses of :mod:`harli_sgl.core.message` (``to_worker`` out, ``from_worker`` in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from harli_sgl.core.message.base import FromWorker, ToWorker
from harli_sgl.core.message.from_worker import Heartbeat, WorkerHello


class Outbox(Protocol):
    def send(self, msg: ToWorker) -> bool:
        """Queue a message for the worker; False if it could not be queued."""


class Inbox(Protocol):
    def recv(self, timeout_s: float) -> FromWorker | None:
        """The worker's next message, waiting up to ``timeout_s``; None if none came."""


class WorkerLink(Protocol):
    """Every member the coordinator (and the pool manager) uses, and nothing else."""

    outbox: Outbox
    inbox: Inbox
    # The current incarnation's hello (None until it says hello): its liveness thread
    # stays in the normal scheduling class when the compute threads are moved.
    hello: WorkerHello | None
    # Called once a worker is known dead (so its pool leases can be returned).
    on_death: Callable[[], None] | None

    @property
    def ready(self) -> bool:
        """The worker said hello and has not died since: grants may be sent."""

    @property
    def pid(self) -> int | None:
        """The worker process's pid (None while none runs): its threads are placed by pid."""

    def check(self, now: float | None = None) -> None:
        """Heartbeat the worker, detect death or a hang, restart after the backoff."""

    def note_alive(self) -> None:
        """Any message from the worker is a sign of life."""

    def on_heartbeat(self, msg: Heartbeat) -> None: ...

    def on_hello(self, msg: WorkerHello) -> None: ...

    def kill_now(self) -> None:
        """Kill the worker at once (a reclaim it did not acknowledge in time)."""

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit, kill it if it does not, and close the queues."""

    def status(self) -> dict:
        """alive, pid, restarts, last exit: for /harli/status."""
