"""The two message directions, the one message that travels both, and the envelope."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


class ToWorker:
    """Base of every message the scheduler sends the worker (see :mod:`.to_worker`)."""

    __slots__ = ()


class FromWorker:
    """Base of every message the worker sends the scheduler (see :mod:`.from_worker`)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Heartbeat(ToWorker, FromWorker):
    sent_at: float
    # Worker -> scheduler: seconds since the worker's message loop last turned. The
    # heartbeat itself comes from a thread of its own, so a loop busy with long
    # but legitimate work (or starved of CPU on a busy host) still proves the
    # process alive; only a loop stalled far beyond any piece is declared hung.
    loop_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Envelope:
    """What actually travels: the message plus the worker incarnation it belongs to.

    The scheduler's sockets outlive any one worker. Tagging every message with the
    worker's generation lets each side drop traffic queued for a dead predecessor.
    """

    generation: int
    message: ToWorker | FromWorker | None = field(default=None)


def types_of(direction: type) -> frozenset[type]:
    """Every concrete message type of one direction (the classes below its base)."""
    found, todo = set(), list(direction.__subclasses__())
    while todo:
        cls = todo.pop()
        # ``dataclass(slots=True)`` replaces each class; the one it replaced stays a
        # subclass until collected, but is no longer its module's attribute.
        if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is cls:
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return frozenset(found)
