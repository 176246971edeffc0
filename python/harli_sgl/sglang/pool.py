"""The unified token/tensor pool, built on SGLang's own KV pool and allocators.

Three small subclasses, installed with SGLang's ``HookRegistry`` (class
REPLACE, which also rebinds every module that imported the original name, so
SGLang's configurator constructs ours without a line of it being copied):

* ``HarliMHATokenToKVPool``: on a host without an accelerator, the KV buffers
  are moved into shared memory as soon as SGLang creates them (before it takes
  their data pointers), so the finetune worker can map them. On GPU nothing
  changes: CUDA buffers travel to the worker as IPC handles.
* ``HarliTokenToKVPoolAllocator`` / ``HarliPagedTokenToKVPoolAllocator``:
  ``available_size()`` counts leased pages as available, because they are, on
  demand: admission budgets and SGLang's idle leak check (available + evictable
  + protected == total) stay exact. Every allocation first makes sure the
  pages really are free, reclaiming leases (with the worker's acknowledgement)
  when they are not, so a request is never retracted or refused while leased
  pages could be taken back.

:class:`SGLangPages` adapts an allocator to the engine-agnostic
:class:`~harli_sgl.core.pool.lender.PoolLender`, and :class:`ServingPool` is the
scheduler's one call per iteration, :meth:`ServingPool.reserve`: it reads
serving's near-term demand off SGLang's queues and hands it to the coordinator,
whose :class:`~harli_sgl.core.pool.manager.PoolManager` decides what to lend.
All lending logic lives in ``harli_sgl/core/pool/``; this module only reads
and writes SGLang's pages.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sglang.srt.mem_cache.allocator.paged import PagedTokenToKVPoolAllocator
from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

from harli_sgl.core.pool.manager import ServingDemand

logger = logging.getLogger(__name__)


class HarliMHATokenToKVPool(MHATokenToKVPool):
    def _create_buffers_normal(self):
        super()._create_buffers_normal()
        for buffer in (*self.k_buffer, *self.v_buffer):
            if buffer.device.type == "cpu":
                buffer.share_memory_()


class _LendingAllocator:
    """Mixin: leased pages count as available and are reclaimed before an allocation fails."""

    harli_lender = None  # a PoolLender, attached by the HarliScheduler

    def available_size(self):
        free = super().available_size()
        lender = self.harli_lender
        return free if lender is None else free + lender.leased_pages * self.page_size

    def _harli_make_room(self, tokens: int) -> None:
        lender = self.harli_lender
        if lender is not None and lender.leased_pages:
            lender.make_room(-(-tokens // self.page_size))

    def alloc(self, need_size: int):
        self._harli_make_room(need_size)
        return super().alloc(need_size)

    def clear(self):
        # SGLang rebuilds the free list from scratch (e.g. /flush_cache): leased pages
        # would become free while the worker still uses them, so take them back first.
        lender = self.harli_lender
        if lender is not None and lender.leased_pages:
            lender.reclaim_all()
        super().clear()


class HarliTokenToKVPoolAllocator(_LendingAllocator, TokenToKVPoolAllocator):
    pass


class HarliPagedTokenToKVPoolAllocator(_LendingAllocator, PagedTokenToKVPoolAllocator):
    def alloc_extend(self, prefix_lens, prefix_lens_cpu, seq_lens, seq_lens_cpu, last_loc,
                     extend_num_tokens, *args, **kwargs):
        # Upper bound on new pages, as SGLang's own check computes it.
        self._harli_make_room((extend_num_tokens // self.page_size + len(prefix_lens) + 1)
                              * self.page_size)
        return super().alloc_extend(prefix_lens, prefix_lens_cpu, seq_lens, seq_lens_cpu,
                                    last_loc, extend_num_tokens, *args, **kwargs)

    def alloc_decode(self, seq_lens, seq_lens_cpu, last_loc, *args, **kwargs):
        self._harli_make_room(len(seq_lens) * self.page_size)
        return super().alloc_decode(seq_lens, seq_lens_cpu, last_loc, *args, **kwargs)


HOOKS = {
    "sglang.srt.mem_cache.memory_pool.MHATokenToKVPool": HarliMHATokenToKVPool,
    "sglang.srt.mem_cache.allocator.token.TokenToKVPoolAllocator": HarliTokenToKVPoolAllocator,
    "sglang.srt.mem_cache.allocator.paged.PagedTokenToKVPoolAllocator":
        HarliPagedTokenToKVPoolAllocator,
}


def lendable_pages(allocator) -> SGLangPages | None:
    """The allocator's pages for the coordinator to lend, or None when this allocator and
    KV pool are not the lending ones (another attention backend, a hybrid pool)."""
    kvcache = allocator.get_kvcache()
    if not isinstance(allocator, _LendingAllocator) or not isinstance(kvcache, HarliMHATokenToKVPool):
        logger.warning("harli: unified pool off (allocator %s, KV pool %s are not lendable)",
                       type(allocator).__name__, type(kvcache).__name__)
        return None
    return SGLangPages(allocator, kvcache)


class ServingPool:
    """The lent pool as the scheduler sees it: attached once, then one call per iteration."""

    def __init__(self, pages: SGLangPages, coordinator, context_len: int, forward_stream=None):
        self._maintain = coordinator.maintain_pool
        self._context_len = context_len
        device = None
        if coordinator.config.device == "cuda":  # UNTESTED: no GPU has been lent
            from harli_sgl.core.gpu.fence import CudaDevice

            # Lent pages change hands after the engine's kernels on both its streams.
            device = CudaDevice((forward_stream,) if forward_stream is not None else ())
        pages.lend_through(coordinator.attach_pool(pages, device))
        logger.info("harli: unified pool: %d pages of %d tokens, %.1f KB per page",
                    pages.total_pages, pages.page_tokens, pages.page_bytes / 1024)

    def reserve(self, running_batch, waiting_queue) -> None:
        """Keep serving's near-term demand free: what running requests may still
        generate, and what queued requests need (prompt plus generation)."""
        context = self._context_len
        running = running_batch.reqs if running_batch is not None else []
        self._maintain(ServingDemand(
            tuple(max(0, (r.sampling_params.max_new_tokens or context) - len(r.output_ids))
                  for r in running),
            tuple(len(r.origin_input_ids) + (r.sampling_params.max_new_tokens or context)
                  for r in waiting_queue)))


class SGLangPages:
    """An SGLang allocator seen as pages (the EnginePages protocol).

    :meth:`lend_through` is the one path from the lender to the allocator: the
    allocator asks it before every allocation and counts its leases as available.
    """

    def __init__(self, allocator, kvcache):
        self.allocator = allocator
        self.page_tokens = allocator.page_size
        self.total_pages = allocator.size // allocator.page_size
        self.buffers: list[torch.Tensor] = [*kvcache.k_buffer, *kvcache.v_buffer]
        self.page_bytes = sum(b[:self.page_tokens].numel() * b.element_size() for b in self.buffers)

    def lend_through(self, lender) -> None:
        self.allocator.harli_lender = lender

    def free_page_ids(self) -> np.ndarray:
        a = self.allocator
        return torch.cat((a.free_pages, a.release_pages)).cpu().numpy()

    def take(self, ranges: list[tuple[int, int]]) -> None:
        a = self.allocator
        a.merge_and_sort_free()
        ids = torch.cat([torch.arange(s, e, dtype=a.free_pages.dtype) for s, e in ranges])
        ids = ids.to(a.free_pages.device)
        keep = ~torch.isin(a.free_pages, ids)
        if int((~keep).sum()) != len(ids):
            raise RuntimeError("harli: tried to lend pages that are not free")
        a.free_pages = a.free_pages[keep]

    def give_back(self, page_ids: np.ndarray) -> None:
        a = self.allocator
        a.free_page_ids(torch.from_numpy(page_ids).to(a.free_pages.dtype).to(a.free_pages.device))
