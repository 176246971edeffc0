"""Typed one-way ZMQ queues between the scheduler and the finetune worker.

Raw sockets stay here; the logic on both sides only sees ``send(msg)`` and
``recv(timeout)``. Each direction is a PUSH/PULL pair over an ``ipc://`` path.
The scheduler binds both ends, because it outlives every worker incarnation; a
restarted worker connects to the same paths. Messages travel inside an
:class:`~harli_sgl.core.message.base.Envelope` carrying the worker generation, and a
receiver drops envelopes of another generation, so nothing queued for a dead
worker reaches its successor (or the other way round).

Queues are typed with a direction's base class (``PushQueue[ToWorker]`` in the
scheduler, ``PullQueue[ToWorker]`` in the worker, and the other way round).

Payloads are pickled: both ends are our own processes on one host.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import uuid
from typing import Generic, TypeVar

import zmq

from harli_sgl.core.message.base import Envelope

T = TypeVar("T")


def new_ipc_path(tag: str) -> str:
    # Unix socket paths are limited to ~107 bytes, so keep them in the temp dir.
    return f"ipc://{os.path.join(tempfile.gettempdir(), f'harli-{tag}-{uuid.uuid4().hex[:12]}')}"


class _Queue:
    def __init__(self, ctx: zmq.Context, kind: int, addr: str, bind: bool, generation: int):
        self.addr = addr
        self.generation = generation
        self.socket = ctx.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        if bind:
            self.socket.bind(addr)
        else:
            self.socket.connect(addr)

    def close(self) -> None:
        self.socket.close(linger=0)


class PushQueue(_Queue, Generic[T]):
    def __init__(self, ctx: zmq.Context, addr: str, *, bind: bool, generation: int = 0):
        super().__init__(ctx, zmq.PUSH, addr, bind, generation)
        # Never block the sender (the scheduler's decode loop) on a slow or dead peer.
        self.socket.setsockopt(zmq.SNDHWM, 1024)

    def send(self, message: T) -> bool:
        """Queue a message; returns False (and drops it) if the peer is gone and the queue full."""
        payload = pickle.dumps(Envelope(self.generation, message), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.socket.send(payload, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False


class PullQueue(_Queue, Generic[T]):
    def __init__(self, ctx: zmq.Context, addr: str, *, bind: bool, generation: int = 0):
        super().__init__(ctx, zmq.PULL, addr, bind, generation)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)

    def recv(self, timeout_s: float | None = 0.0) -> T | None:
        """Next message of this generation, or None once ``timeout_s`` passes (None = forever)."""
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.poller.poll(wait_ms):
                return None
            envelope: Envelope = pickle.loads(self.socket.recv())
            if envelope.generation == self.generation:
                return envelope.message  # type: ignore[return-value]
            # Stale traffic from another worker incarnation: drop it, keep waiting.

    def drain(self) -> list[T]:
        out: list[T] = []
        while (msg := self.recv(0.0)) is not None:
            out.append(msg)
        return out
