"""The lending protocol against a real page set and an in-process worker stand-in.

The worker side here is the real LeasedArena: grants add leases to it and a
reclaim request moves its blocks out before the acknowledgement is delivered,
exactly as the worker process does between pieces.
"""

from __future__ import annotations

import torch

from pool_util import rig


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
