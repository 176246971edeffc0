"""The worker channel: the coordinator's one way to hear from and wait on the worker.

Every message the worker sends goes through :meth:`WorkerChannel.drain` or one
of the two waits below, and from there through the one dispatcher of the
scheduler process; each is also a sign of life for the supervisor. Serving
never waits on the worker without a bound: a serial slot is waited for up to
its time budget plus ``REPORT_GRACE_MS`` (a late report is accounted whenever
it arrives), and :meth:`wait_for` (reclaims, co-run stops) takes a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.message.from_worker import FromWorker, SlotReport
from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.core.policy.base import Grant
from harli_sgl.core.worker_link import WorkerLink

# A slot may overrun its budget by this much before the scheduler stops waiting.
REPORT_GRACE_MS = 25.0


class SlotRun(NamedTuple):
    """A serial slot as the scheduler lived it: the report (None: overrun) and its span."""

    report: SlotReport | None
    started: float
    ended: float


class WorkerChannel:
    def __init__(self, link: WorkerLink | None, dispatch: Dispatcher[FromWorker]):
        self.link = link
        self.dispatch = dispatch
        self.slots_overrun = 0
        self._slot_id = 0

    def drain(self) -> None:
        """Dispatch everything the worker has sent so far, without waiting."""
        link = self.link
        if link is None:
            return
        while (msg := link.inbox.recv(0.0)) is not None:
            link.note_alive()
            self.dispatch(msg)

    def pump(self) -> None:
        """Drain, then let the supervisor judge the worker's health."""
        if self.link is not None:
            # Read what the worker already sent *before* judging its silence: after a
            # long iteration its heartbeats are queued here, not missing.
            self.drain()
            self.link.check()

    def wait_for(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Dispatch the worker's messages until ``done()`` or the timeout (used by reclaims)."""
        link = self.link
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or link is None:
                return done()
            msg = link.inbox.recv(min(left, 0.05))
            if msg is not None:
                link.note_alive()
                self.dispatch(msg)
            else:
                link.check()  # a dead worker's leases are released here
        return True

    def run_slot(self, grant: Grant, synthetic: bool) -> SlotRun:
        """Send a serial slot and block until its report, within the budget plus a grace."""
        link = self.link
        self._slot_id += 1
        sent_at = time.perf_counter()
        started = time.monotonic()
        link.outbox.send(SlotGrant(self._slot_id, grant.budget_units, grant.budget_ms, synthetic,
                                   deadline=started + grant.budget_ms / 1000.0))
        deadline = sent_at + (grant.budget_ms + REPORT_GRACE_MS) / 1000.0
        report = None
        while True:
            msg = link.inbox.recv(max(0.0, deadline - time.perf_counter()))
            if msg is None:
                # Serving must not wait on a slow or dead worker; its report is
                # accounted for whenever it arrives.
                self.slots_overrun += 1
                break
            link.note_alive()
            self.dispatch(msg)
            if isinstance(msg, SlotReport) and msg.slot_id == self._slot_id:
                report = msg
                break
        return SlotRun(report, started, time.monotonic())
