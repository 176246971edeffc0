"""The pool manager: serving's demand and the worker's want, turned into leases once per iteration."""

from __future__ import annotations

from types import SimpleNamespace

from harli_sgl.core.message.from_worker import WorkerState
from harli_sgl.core.pool.manager import PoolManager, ServingDemand
from harli_sgl.core.pool.watermark import Watermarks
from pool_util import rig


def manager():
    pages, worker, _, _ = rig()
    link = SimpleNamespace(outbox=worker, kill_now=lambda: None, ready=True)
    m = PoolManager(pages, link, wait=worker.wait,
                    watermarks=Watermarks(quantum_pages=8, guard_fraction=0.0))
    worker.lender = m.lender
    return pages, m


def test_demand_in_tokens_and_want_in_bytes_become_whole_quanta_of_pages():
    pages, m = manager()
    wants = WorkerState(has_work=True, wanted_bytes=30 * pages.page_bytes)
    # 20 + 20 tokens of 2-token pages: 20 pages stay free for serving.
    m.maintain(ServingDemand((12, 8), (20,)), wants, lend=True)
    assert m.lender.leased_pages == 24  # 30 wanted, in whole quanta of 8
    m.maintain(ServingDemand((), (2 * 64,)), wants, lend=True)  # serving needs every page
    assert m.lender.leased_pages == 0 and len(pages.free) == 64


def test_nothing_is_lent_to_a_policy_that_does_not_lend_or_a_worker_without_work():
    pages, m = manager()
    wants = WorkerState(has_work=True, wanted_bytes=30 * pages.page_bytes)
    m.maintain(ServingDemand(), wants, lend=False)
    m.maintain(ServingDemand(), WorkerState(has_work=False, wanted_bytes=wants.wanted_bytes),
               lend=True)
    assert m.lender.leased_pages == 0


def test_a_dead_worker_returns_every_lease():
    pages, m = manager()
    m.maintain(ServingDemand(), WorkerState(has_work=True, wanted_bytes=16 * pages.page_bytes),
               lend=True)
    assert m.lender.leased_pages == 16
    m.worker_died()
    assert m.lender.leased_pages == 0 and len(pages.free) == 64
    assert m.status()["total_tokens"] == 128
