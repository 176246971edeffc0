"""The unified pool's test rig: a real page set and the real worker-side arena, in process."""

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
