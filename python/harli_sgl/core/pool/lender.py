"""The scheduler's side of the unified pool: lend free pages, reclaim them with acknowledgement.

The engine's allocator is reached through :class:`EnginePages` (the SGLang
adapter lives in ``harli_sgl/sglang/pool.py``), the worker through two
callables: ``send(message)`` and ``wait(predicate, timeout_s)`` (which pumps
and dispatches the worker's messages until the predicate holds). So the whole
protocol runs, and is tested, without SGLang:

* ``maintain(reserve, wanted)``, once per iteration: reclaim if serving's
  near-term demand no longer fits in the free pages, else lend whole quanta of
  contiguous free pages while the worker wants more;
* ``make_room(pages)``, from the allocator when an allocation would fail:
  reclaim leases (newest first) until it fits. Serving never retracts a
  request or refuses admission while leased pages could be reclaimed instead;
* a reclaim sends ``ReclaimRequest`` and returns the pages to the engine only
  after the worker's ``ReclaimAck`` (it has moved its data out). If the worker
  does not answer within ``ack_timeout_s`` it is killed, and pages come back
  once it is dead: a dead process writes nothing;
* ``release_all()`` when the worker died: its leases are returned at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from harli_sgl.core.message.from_worker import ReclaimAck
from harli_sgl.core.message.to_worker import LeaseGrant, ReclaimRequest
from harli_sgl.core.pool.ledger import PageLease, LeaseLedger, pick_ranges
from harli_sgl.core.pool.watermark import Watermarks

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0


class EnginePages(Protocol):
    """The engine allocator, in pages (page 0 is padding and never free)."""

    total_pages: int
    page_tokens: int
    page_bytes: int  # bytes of one page across every KV buffer

    def free_page_ids(self) -> np.ndarray: ...

    def take(self, ranges: list[tuple[int, int]]) -> None: ...

    def give_back(self, page_ids: np.ndarray) -> None: ...


class PoolLender:
    def __init__(self, engine: EnginePages, send: Callable[[object], bool],
                 wait: Callable[[Callable[[], bool], float], bool], kill_worker: Callable[[], None],
                 watermarks: Watermarks | None = None, ack_timeout_s: float = ACK_TIMEOUT_S):
        self.engine = engine
        self.ledger = LeaseLedger(engine.total_pages)
        self.watermarks = watermarks or Watermarks()
        self._send, self._wait, self._kill = send, wait, kill_worker
        self.ack_timeout_s = ack_timeout_s
        self.worker_ready = False

    @property
    def leased_pages(self) -> int:
        return self.ledger.leased_pages

    # -- called by the scheduler ---------------------------------------------------------

    def maintain(self, reserve_pages: int, wanted_pages: int) -> None:
        free = len(self.engine.free_page_ids())
        short = self.watermarks.to_reclaim(free, reserve_pages)
        if short and self.leased_pages:
            self._reclaim_pages(short)
            return
        if not self.worker_ready:
            return
        pages = self.watermarks.to_lend(free, reserve_pages, self.leased_pages, self.engine.total_pages,
                                    wanted_pages - self.leased_pages)
        if pages:
            self._lend(pages)

    def make_room(self, pages: int) -> None:
        """An allocation needs ``pages`` free pages now: reclaim until it has them."""
        short = pages - len(self.engine.free_page_ids())
        if short > 0 and self.leased_pages:
            self._reclaim_pages(short)

    def reclaim_all(self) -> None:
        """Take every lease back (the engine is about to reset its free list)."""
        for lease in self.ledger.newest_first():
            self._reclaim(lease)

    def release_all(self) -> None:
        """The worker is dead: every lease returns to the engine."""
        self.worker_ready = False
        for lease in self.ledger.release_all():
            self.engine.give_back(lease.page_ids())
            logger.warning("harli: finetune worker died holding lease %d (%d pages); pages returned",
                           lease.lease_id, lease.pages)

    def on_ack(self, msg: ReclaimAck) -> None:
        if msg.lease_id in self.ledger.leases:
            lease = self.ledger.complete(msg.lease_id)
            self.engine.give_back(lease.page_ids())

    def check_integrity(self) -> None:
        self.ledger.check_integrity(self.engine.free_page_ids())

    def status(self) -> dict:
        e = self.engine
        return {"total_tokens": e.total_pages * e.page_tokens,
                "free_tokens": len(e.free_page_ids()) * e.page_tokens,
                **self.ledger.status(e.page_tokens)}

    # -- internals -----------------------------------------------------------------------

    def _lend(self, pages: int) -> None:
        free = np.sort(self.engine.free_page_ids())
        ranges = pick_ranges(free, pages, self.watermarks.quantum_pages)
        if not ranges:
            return
        self.engine.take(ranges)
        lease = self.ledger.add(ranges)
        if not self._send(LeaseGrant(lease.lease_id, lease.ranges, self.engine.page_bytes)):
            # The worker cannot be reached: do not leave pages stranded.
            self.cancel(lease.lease_id)

    def cancel(self, lease_id: int) -> None:
        """A lease the worker never received: its pages go back to the engine now."""
        if lease_id in self.ledger.leases:
            self.ledger.begin_reclaim(lease_id)
            self.engine.give_back(self.ledger.complete(lease_id).page_ids())

    def _reclaim_pages(self, pages: int) -> None:
        freed = 0
        for lease in self.ledger.newest_first():
            if freed >= pages:
                break
            freed += lease.pages
            self._reclaim(lease)

    def _reclaim(self, lease: PageLease) -> None:
        self.ledger.begin_reclaim(lease.lease_id)
        self._send(ReclaimRequest(lease.lease_id))
        done = self._wait(lambda: lease.lease_id not in self.ledger.leases, self.ack_timeout_s)
        if not done and lease.lease_id in self.ledger.leases:
            logger.error("harli: worker did not acknowledge reclaim of lease %d in %.1fs; killing it",
                         lease.lease_id, self.ack_timeout_s)
            self._kill()  # returns once the process is dead; release_all() gives the pages back
