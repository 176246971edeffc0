"""The worker's heartbeat thread: liveness that a busy message loop cannot hold up.

Heartbeats come from a thread of their own, on a socket of their own (ZMQ
sockets are not shared between threads), and carry the age of the message
loop's last turn, so the supervisor tells a loop busy with long but legitimate
work from a stuck one. The thread's id is announced in the hello: it stays in
the normal scheduling class when the compute threads move to SCHED_IDLE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import zmq

from harli_sgl.core.message.from_worker import FromWorker, Heartbeat
from harli_sgl.core.transport import PushQueue


class Liveness(threading.Thread):
    """Sends heartbeats on a socket of its own (ZMQ sockets are not shared between threads)."""

    def __init__(self, ctx: zmq.Context, addr: str, generation: int, period_s: float,
                 loop_seen: Callable[[], float]):
        super().__init__(name="harli-liveness", daemon=True)
        self._queue: PushQueue[FromWorker] = PushQueue(ctx, addr, bind=False, generation=generation)
        self._period_s = period_s
        self._loop_seen = loop_seen
        self._stop_event = threading.Event()
        self.tid = 0
        self._ready = threading.Event()

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self._ready.set()
        while not self._stop_event.wait(self._period_s):
            self._queue.send(Heartbeat(time.time(), time.monotonic() - self._loop_seen()))
        self._queue.close()

    def start_and_wait(self) -> int:
        self.start()
        self._ready.wait(5.0)
        return self.tid

    def stop(self) -> None:
        self._stop_event.set()
