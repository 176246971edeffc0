"""The pool manager: serving's demand and the worker's want, turned into leases once per iteration."""

from __future__ import annotations

from types import SimpleNamespace

from harli_sgl.core.message.from_worker import WorkerState
from harli_sgl.core.pool.manager import PoolManager, ServingDemand
from harli_sgl.core.pool.watermark import Watermarks
from device_util import QueueDevice
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


def gpu_manager():
    pages, worker, _, _ = rig()
    device = QueueDevice()
    link = SimpleNamespace(outbox=worker, kill_now=lambda: None, ready=True)
    m = PoolManager(pages, link, wait=worker.wait, device=device,
                    watermarks=Watermarks(quantum_pages=8, guard_fraction=0.0))
    worker.lender = m.lender
    return pages, worker, device, m


def test_on_a_gpu_lent_pages_reach_the_worker_only_after_the_engines_fence():
    pages, worker, device, m = gpu_manager()
    wants = WorkerState(has_work=True, wanted_bytes=16 * pages.page_bytes)
    m.maintain(ServingDemand(), wants, lend=True)
    assert m.lender.leased_pages == 16  # out of the engine's free list at once
    assert len(worker.arena.chunks) == 0 and m.status()["grants_held"] == 1
    m.maintain(ServingDemand(), wants, lend=True)  # the engine's kernels still run
    assert len(worker.arena.chunks) == 0
    device.finished = device.queued  # they are done
    m.maintain(ServingDemand(), wants, lend=True)
    assert len(worker.arena.chunks) == 1 and m.status()["grants_held"] == 0


def test_a_reclaim_of_pages_not_yet_handed_over_needs_no_worker_ack():
    pages, worker, device, m = gpu_manager()
    m.maintain(ServingDemand(), WorkerState(has_work=True, wanted_bytes=16 * pages.page_bytes),
               lend=True)
    m.maintain(ServingDemand((), (2 * 64,)), WorkerState(has_work=True), lend=True)
    assert m.lender.leased_pages == 0 and len(pages.free) == 64
    assert worker.inbox == [] and len(worker.arena.chunks) == 0
    device.finished = device.queued
    m.maintain(ServingDemand((), (2 * 64,)), WorkerState(has_work=False), lend=True)
    assert len(worker.arena.chunks) == 0  # cancelled grants never go out later
