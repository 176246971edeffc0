"""The lending protocol against a real page set and an in-process worker stand-in.

The worker side here is the real LeasedArena: grants add leases to it and a
reclaim request moves its blocks out before the acknowledgement is delivered,
exactly as the worker process does between pieces.
"""

from __future__ import annotations

import numpy as np
import torch

from harli_sgl.core.message.from_worker import ReclaimAck
from harli_sgl.core.message.to_worker import LeaseGrant, ReclaimRequest
from harli_sgl.core.pool.arena import LeasedArena
from harli_sgl.core.pool.lender import PoolLender
from harli_sgl.core.pool.watermark import Watermarks


class Pages:
    """An engine allocator reduced to its free set (page 0 reserved)."""

    def __init__(self, total_pages: int, page_tokens: int, buffers):
        self.total_pages, self.page_tokens = total_pages, page_tokens
        self.buffers = buffers
        self.page_bytes = sum(b[:page_tokens].numel() * b.element_size() for b in buffers)
        self.free = set(range(1, total_pages + 1))

    def free_page_ids(self):
        return np.array(sorted(self.free), dtype=np.int64)

    def take(self, ranges):
        for s, e in ranges:
            ids = set(range(s, e))
            assert ids <= self.free
            self.free -= ids

    def give_back(self, page_ids):
        assert not (set(page_ids.tolist()) & self.free)
        self.free |= set(page_ids.tolist())


class Worker:
    def __init__(self, pages, respond=True):
        self.arena = LeasedArena(pages.buffers, pages.page_tokens, min_pack_bytes=1)
        self.inbox, self.respond, self.lender = [], respond, None

    def send(self, msg) -> bool:
        if isinstance(msg, LeaseGrant):
            self.arena.add_lease(msg.lease_id, msg.page_ranges)
        else:
            self.inbox.append(msg)
        return True

    def wait(self, done, timeout_s) -> bool:
        while self.respond and self.inbox:
            msg = self.inbox.pop(0)
            assert isinstance(msg, ReclaimRequest)
            self.lender.on_ack(ReclaimAck(msg.lease_id, self.arena.reclaim(msg.lease_id)))
        return done()


def rig(respond=True, total=64, page_tokens=2):
    buffers = [torch.zeros(total * page_tokens + page_tokens, 4) for _ in range(2)]
    pages = Pages(total, page_tokens, buffers)
    worker = Worker(pages, respond)
    killed = []
    lender = PoolLender(pages, worker.send, worker.wait, kill_worker=lambda: killed.append(1),
                        watermarks=Watermarks(quantum_pages=8, guard_fraction=0.0))
    worker.lender = lender
    lender.worker_ready = True
    return pages, worker, lender, killed


def test_lends_what_serving_does_not_need_and_reclaims_on_demand():
    pages, worker, lender, _ = rig()
    lender.maintain(reserve_pages=20, wanted_pages=30)
    assert lender.leased_pages == 24  # whole quanta of 8, within the want
    lender.check_integrity()
    # The worker stores an activation in the lease...
    t = torch.arange(40.0)
    block = worker.arena.pack(t)
    assert worker.arena.packed_bytes == 160
    # ...then serving suddenly needs almost everything: leases come back, newest first,
    # only after the worker moved its data out.
    lender.make_room(60)
    assert len(pages.free) >= 60 and lender.leased_pages <= 64 - 60
    assert torch.equal(worker.arena.unpack(block), t)
    assert lender.status()["reclaims"] >= 1 and lender.status()["reclaim_latency_ms_p99"] >= 0
    lender.check_integrity()


def test_watermark_rise_reclaims_and_nothing_is_lent_without_a_ready_worker():
    pages, worker, lender, _ = rig()
    lender.maintain(reserve_pages=0, wanted_pages=64)
    lent = lender.leased_pages
    assert lent > 0
    lender.maintain(reserve_pages=64 - lent + 10, wanted_pages=64)  # demand no longer fits
    assert lender.leased_pages < lent
    lender.check_integrity()
    lender.release_all()
    assert lender.leased_pages == 0 and len(pages.free) == 64
    lender.maintain(reserve_pages=0, wanted_pages=64)  # worker gone: nothing lent
    assert lender.leased_pages == 0


def test_a_worker_that_never_acknowledges_is_killed_and_its_pages_return():
    pages, worker, lender, killed = rig(respond=False)
    lender.maintain(reserve_pages=0, wanted_pages=16)
    assert lender.leased_pages == 16
    lender.make_room(60)
    assert killed == [1]
    assert lender.leased_pages == 16  # still leased: the worker might still be writing...
    lender.release_all()              # ...until it is known dead
    assert len(pages.free) == 64
    lender.check_integrity()


def test_reclaim_all_takes_every_lease_back():
    pages, worker, lender, _ = rig()
    lender.maintain(reserve_pages=0, wanted_pages=40)
    assert lender.ledger.leases
    lender.reclaim_all()
    assert lender.leased_pages == 0 and len(pages.free) == 64 and not worker.arena.chunks
