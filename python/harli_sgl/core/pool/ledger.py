"""Bookkeeping of the unified token/tensor pool: which KV pages are lent to finetuning.

The serving engine's KV cache is a pool of pages. Harli lends *free* pages to
the finetune worker as tensor storage and takes them back on demand. This
module owns the lending state and its invariants; it knows nothing about the
engine (the SGLang glue in ``harli_sgl/sglang/pool.py`` moves pages between the
allocator's free list and here).

Ownership table (every page is in exactly one state):

=============  ======================================  =====================================
state          where it is recorded                    who may touch its memory
=============  ======================================  =====================================
padding        page 0, never anywhere else             the engine (dummy writes); never lent
free           the engine allocator's free list        nobody (contents are garbage)
held           the engine (requests, radix)            the engine
leased         a :class:`PageLease` here               the worker only
reclaiming     a PageLease with ``reclaim_started``    the worker until it acknowledges
=============  ======================================  =====================================

Transitions: free -> leased (``add``, the caller removes the pages from the free
list first); leased -> reclaiming (``begin_reclaim``, a ``ReclaimRequest`` is
sent); reclaiming -> free (``complete``, after the worker's ``ReclaimAck``, the
caller returns the pages to the free list); leased/reclaiming -> free
(``release_all``, only once the worker process is dead). The engine may reuse a
page only after it is free again: that is what makes a reclaim lose nothing.

``check_integrity(free_ids)`` asserts all of the above against the engine's
actual free list; tests and the scheduler's idle check call it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class PoolIntegrityError(AssertionError):
    pass


@dataclass
class PageLease:
    """KV pages lent to the worker (not a job's lease on its instance: jobs/store/leases.py)."""

    lease_id: int
    ranges: tuple[tuple[int, int], ...]  # half-open page ranges [start, end)
    granted_at: float = field(default_factory=time.monotonic)
    reclaim_started: float | None = None

    @property
    def pages(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def page_ids(self) -> np.ndarray:
        return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in self.ranges])


def pick_ranges(free_sorted: np.ndarray, pages: int, min_run: int) -> list[tuple[int, int]]:
    """Contiguous runs of free pages to lend, highest page ids first.

    The engine allocates from the low end of its free list, so the high end stays
    free longest and lending it disturbs admission least. Runs shorter than
    ``min_run`` are not worth lending (they would make chunks too small to hold
    an activation). May return fewer than ``pages`` pages.
    """
    if pages <= 0 or len(free_sorted) == 0:
        return []
    breaks = np.nonzero(np.diff(free_sorted) != 1)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks + 1, [len(free_sorted)]))
    out: list[tuple[int, int]] = []
    need = pages
    for s, e in zip(starts[::-1], ends[::-1]):
        run = int(e - s)
        if run < min_run:
            continue
        take = min(run, need)
        hi = int(free_sorted[e - 1]) + 1
        out.append((hi - take, hi))
        need -= take
        if need <= 0:
            break
    return out


class LeaseLedger:
    def __init__(self, total_pages: int, latency_window: int = 1000):
        self.total_pages = total_pages  # pages 1..total_pages; 0 is padding
        self.leases: dict[int, PageLease] = {}
        self._next_id = 1
        self.reclaims = 0
        self.released_on_death = 0
        self.latencies_ms: deque[float] = deque(maxlen=latency_window)

    @property
    def leased_pages(self) -> int:
        return sum(lease.pages for lease in self.leases.values())

    def add(self, ranges: list[tuple[int, int]]) -> PageLease:
        for s, e in ranges:
            if not (1 <= s < e <= self.total_pages + 1):
                raise PoolIntegrityError(f"range [{s}, {e}) is outside pages 1..{self.total_pages}")
        lease = PageLease(self._next_id, tuple(ranges))
        self._next_id += 1
        taken = self._taken()
        mine = lease.page_ids()
        if len(np.unique(mine)) != len(mine) or np.isin(mine, taken).any():
            raise PoolIntegrityError(f"lease {lease.lease_id} overlaps pages already leased")
        self.leases[lease.lease_id] = lease
        return lease

    def begin_reclaim(self, lease_id: int) -> PageLease:
        lease = self.leases[lease_id]
        if lease.reclaim_started is None:
            lease.reclaim_started = time.monotonic()
        return lease

    def complete(self, lease_id: int) -> PageLease:
        """The worker acknowledged: the lease's pages may go back to the engine."""
        lease = self.leases.pop(lease_id)
        self.reclaims += 1
        if lease.reclaim_started is not None:
            self.latencies_ms.append((time.monotonic() - lease.reclaim_started) * 1000.0)
        return lease

    def release_all(self) -> list[PageLease]:
        """The worker is dead: nothing can touch leased memory any more."""
        leases = list(self.leases.values())
        self.leases.clear()
        self.released_on_death += len(leases)
        return leases

    def newest_first(self) -> list[PageLease]:
        return sorted(self.leases.values(), key=lambda lease: -lease.lease_id)

    def _taken(self) -> np.ndarray:
        if not self.leases:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([lease.page_ids() for lease in self.leases.values()])

    def check_integrity(self, free_ids: np.ndarray) -> None:
        """Assert the ownership table against the engine's free list (page ids)."""
        leased = self._taken()
        free_ids = np.asarray(free_ids, dtype=np.int64)
        if len(np.unique(leased)) != len(leased):
            raise PoolIntegrityError("a page is in two leases")
        if (leased == 0).any() or (free_ids == 0).any():
            raise PoolIntegrityError("page 0 (padding) is free or leased")
        if len(leased) and (leased.min() < 1 or leased.max() > self.total_pages):
            raise PoolIntegrityError("a leased page is outside the pool")
        if len(np.unique(free_ids)) != len(free_ids):
            raise PoolIntegrityError("a page is twice in the free list")
        both = np.intersect1d(leased, free_ids)
        if len(both):
            raise PoolIntegrityError(f"{len(both)} pages are both leased and free, e.g. {both[:5]}")

    def status(self, page_tokens: int) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {
            "leased_tokens": self.leased_pages * page_tokens,
            "leases": len(self.leases),
            "reclaims": self.reclaims,
            "reclaim_latency_ms_p50": float(np.percentile(lat, 50)) if lat is not None else None,
            "reclaim_latency_ms_p99": float(np.percentile(lat, 99)) if lat is not None else None,
            "released_on_worker_death": self.released_on_death,
        }
