"""The unified pool behind one object: what the coordinator calls, once per iteration.

:class:`PoolManager` owns the :class:`~harli_sgl.core.pool.lender.PoolLender`
and everything around it that used to be spread over the scheduler: turning
serving's demand (:class:`ServingDemand`, measured by the engine's adapter)
into a reserve with the :class:`~harli_sgl.core.pool.watermark.Watermarks`,
turning the worker's wanted bytes into pages, following the worker's life
(hello, death) and checking the ledger against the engine every
``POOL_CHECK_EVERY_S``. A change to lending goes here or below, in this package.

Hand-over on a GPU. Pages free in the allocator may still be read by the
engine's queued kernels, so a ``LeaseGrant`` is held back until a fence
recorded at lending (on the engine's streams) has completed
(:class:`~harli_sgl.core.gpu.fence.PendingGrants`), checked without blocking
at every call; a reclaim of a lease still held back cancels it (the worker
never saw it). The worker fences its own kernels before ``ReclaimAck``. On the
CPU the fence is done when recorded, so a grant goes out at once, as before.
The GPU side of the fences is UNTESTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from harli_sgl.core.gpu.fence import Device, HostDevice, PendingGrants
from harli_sgl.core.message.from_worker import ReclaimAck, WorkerState
from harli_sgl.core.message.to_worker import LeaseGrant, ReclaimRequest
from harli_sgl.core.pool.ledger import PoolIntegrityError
from harli_sgl.core.pool.lender import EnginePages, PoolLender
from harli_sgl.core.pool.watermark import Watermarks
from harli_sgl.core.worker_link import WorkerLink

logger = logging.getLogger(__name__)

POOL_CHECK_EVERY_S = 10.0


class ServingDemand(NamedTuple):
    """Tokens serving may need soon, per request: what each running request may still
    generate, and what each queued request needs (prompt plus generation)."""

    running_remaining: tuple[int, ...] = ()
    waiting: tuple[int, ...] = ()


class PoolManager:
    def __init__(self, pages: EnginePages, link: WorkerLink,
                 wait: Callable[[Callable[[], bool], float], bool],
                 watermarks: Watermarks | None = None, device: Device | None = None):
        self._send_now = link.outbox.send
        self.handoffs = PendingGrants(device or HostDevice())
        self.lender = PoolLender(pages, send=self._send, wait=wait, kill_worker=link.kill_now,
                                 watermarks=watermarks)
        self.lender.worker_ready = link.ready
        self.integrity = "unchecked"
        self._last_check = time.monotonic()

    def maintain(self, demand: ServingDemand, worker: WorkerState, lend: bool) -> None:
        """Lend or reclaim pages against serving's near-term demand (``lend``: the policy
        lends at all), and check the ledger now and then."""
        self._hand_over()
        lender = self.lender
        if lend:
            pages = lender.engine
            reserve = lender.watermarks.reserve_pages(pages.total_pages, pages.page_tokens,
                                                      demand.running_remaining, demand.waiting)
            wanted = -(-worker.wanted_bytes // pages.page_bytes) if worker.has_work else 0
            lender.maintain(reserve, wanted)
        now = time.monotonic()
        if now - self._last_check > POOL_CHECK_EVERY_S:
            self._last_check = now
            try:
                lender.check_integrity()
                self.integrity = "ok"
            except PoolIntegrityError as e:
                # Reported loudly, never fatal: serving must outlive a bookkeeping bug.
                logger.error("harli: unified pool integrity check failed: %s", e)
                self.integrity = str(e)

    def worker_ready(self) -> None:
        self.lender.worker_ready = True

    def worker_died(self) -> None:
        self.handoffs.clear()
        self.lender.release_all()

    def _send(self, msg: object) -> bool:
        """The lender's messages, with grants held back until the engine's fence is done."""
        if isinstance(msg, LeaseGrant):
            self.handoffs.lend(msg.lease_id, msg)
            self._hand_over()
            return True
        if isinstance(msg, ReclaimRequest) and self.handoffs.cancel(msg.lease_id):
            self.lender.cancel(msg.lease_id)
            return True
        return self._send_now(msg)

    def _hand_over(self) -> None:
        for grant in self.handoffs.ready():
            if not self._send_now(grant):  # the worker cannot be reached: pages back
                self.lender.cancel(grant.lease_id)

    def on_ack(self, msg: ReclaimAck) -> None:
        self.lender.on_ack(msg)

    def status(self) -> dict:
        return {**self.lender.status(), "grants_held": len(self.handoffs)}
