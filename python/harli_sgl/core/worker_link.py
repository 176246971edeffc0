"""WorkerLink: what the slot coordinator needs from the finetune worker, declared.

The coordinator never spawns or kills a process itself. It talks to the worker
through this interface, which the :class:`~harli_sgl.worker.supervisor.WorkerSupervisor`
implements (a supervised subprocess over ZeroMQ queues); a test or another
engine's integration can implement it as well. Messages are the typed
dataclasses of :mod:`harli_sgl.core.message`.
"""

from __future__ import annotations

from typing import Protocol


class Outbox(Protocol):
    def send(self, msg: object) -> bool:
        """Queue a message for the worker; False if it could not be queued."""


class Inbox(Protocol):
    def recv(self, timeout_s: float) -> object | None:
        """The worker's next message, waiting up to ``timeout_s``; None if none came."""


class WorkerLink(Protocol):
    outbox: Outbox
    inbox: Inbox

    @property
    def ready(self) -> bool:
        """The worker said hello and has not died since: grants may be sent."""

    def check(self, now: float | None = None) -> None:
        """Heartbeat the worker, detect death or a hang, restart after the backoff."""

    def note_alive(self) -> None:
        """Any message from the worker is a sign of life."""

    def on_heartbeat(self, msg) -> None: ...

    def on_hello(self, msg) -> None: ...

    def kill_now(self) -> None:
        """Kill the worker at once (a reclaim it did not acknowledge in time)."""

    def status(self) -> dict:
        """alive, pid, restarts, last exit: for /harli/status."""
