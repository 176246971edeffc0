"""Finetune tensors stored in KV pages lent by the serving engine.

The worker maps the engine's KV buffers once (shared memory on CPU, CUDA IPC
on GPU). A lease names page ranges; in each KV buffer a page range is one
contiguous byte *chunk*, so a lease gives one chunk per buffer per range. The
arena places autograd's saved activations there through
``torch.autograd.graph.saved_tensors_hooks``:

* ``pack(t)`` copies a large activation into free chunk space and returns a
  small handle (a :class:`Block`); the original is then free to be released.
  A tensor too big for one chunk is split across several. Parameters (the
  shared base weights, LoRA weights) and the chunked trainer's boundary leaves
  are never packed: they live elsewhere anyway. With no room (or no lease) the
  tensor stays in private memory: leasing is an optimisation, never a failure.
* ``unpack(block)`` returns a view into the chunk (zero-copy) when the block
  has one segment, or gathers the segments into a private tensor that lives
  only for that layer's backward.
* ``reclaim(lease_id)`` copies every live block of that lease into private
  memory, then forgets the lease's chunks. The worker acknowledges only after
  this returns, and it handles reclaims between pieces, when no backward holds
  an unpacked view: nothing is lost and nothing dangles.

Chunk space is a bump allocator per chunk; when the last block in a chunk dies
(its micro-batch's backward finished) the chunk is reset.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

ALIGN = 64
MIN_PACK_BYTES = 64 * 1024  # smaller tensors are not worth the bookkeeping


@dataclass
class _Chunk:
    lease_id: int
    data: torch.Tensor  # uint8 view into a KV buffer
    used: int = 0
    live: int = 0

    @property
    def free(self) -> int:
        return self.data.numel() - self.used


@dataclass(eq=False)
class Block:
    """A packed tensor: segments of leased chunks, or (after a reclaim) a private copy."""

    shape: torch.Size
    dtype: torch.dtype
    nbytes: int
    segments: list[tuple[_Chunk, int, int]] = field(default_factory=list)  # (chunk, offset, length)
    private: torch.Tensor | None = None


class LeasedArena:
    def __init__(self, buffers: list[torch.Tensor], page_tokens: int,
                 exclude: list[torch.Tensor] = (), min_pack_bytes: int = MIN_PACK_BYTES):
        """Args:
            buffers: the engine's KV buffers (each ``[pages * page_tokens, ...]``, contiguous).
            page_tokens: tokens per page (rows of each buffer per page).
            exclude: tensors never to pack (parameters); matched by storage.
        """
        self._bytes = [b.view(-1).view(torch.uint8) for b in buffers]
        self._page_bytes = [b[:page_tokens].numel() * b.element_size() for b in buffers]
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.min_pack_bytes = min_pack_bytes
        self.chunks: dict[int, list[_Chunk]] = {}
        self._blocks: dict[int, weakref.WeakSet[Block]] = {}
        self.packed_bytes = 0          # live bytes in leased memory
        self.peak_packed_bytes = 0
        self.fallback_bytes = 0        # total bytes that wanted a lease and did not get one
        self.moved_bytes = 0           # copied out by reclaims
        self._window = 0               # bytes offered to pack() in the current micro-batch
        self._window_peak = 0          # the largest completed micro-batch's

    # -- leases ------------------------------------------------------------------------

    def add_lease(self, lease_id: int, page_ranges: tuple[tuple[int, int], ...]) -> None:
        chunks = []
        for data, page_bytes in zip(self._bytes, self._page_bytes):
            for s, e in page_ranges:
                chunks.append(_Chunk(lease_id, data[s * page_bytes:e * page_bytes]))
        chunks.sort(key=lambda c: -c.data.numel())  # place big tensors first-fit into big chunks
        self.chunks[lease_id] = chunks
        self._blocks[lease_id] = weakref.WeakSet()

    def reclaim(self, lease_id: int) -> int:
        """Move every live block of the lease into private memory; returns bytes moved."""
        moved = 0
        for block in list(self._blocks.pop(lease_id, ())):
            if block.private is None:
                block.private = self._gather(block)
                moved += block.nbytes
                for chunk, _, length in block.segments:
                    self.packed_bytes -= length
                block.segments = []
        self.chunks.pop(lease_id, None)
        self.moved_bytes += moved
        return moved

    def micro_batch_done(self) -> None:
        """A micro-batch's backward finished: its saved tensors were one window of demand."""
        self._window_peak = max(self._window_peak, self._window)
        self._window = 0

    def wanted_bytes(self) -> int:
        """Leased bytes that would hold a whole micro-batch's saved activations (with slack)."""
        return int(1.25 * max(self._window_peak, self._window))

    # -- saved-tensor hooks ------------------------------------------------------------

    def hooks(self):
        return self.pack, self.unpack

    def pack(self, t: torch.Tensor):
        nbytes = t.numel() * t.element_size()
        if (nbytes < self.min_pack_bytes or not t.is_contiguous()
                or (t.is_leaf and t.requires_grad)
                or t.untyped_storage().data_ptr() in self._exclude):
            return t
        self._window += nbytes
        segments = self._allocate(nbytes, t.device)
        if segments is None:
            self.fallback_bytes += nbytes
            return t
        block = Block(t.shape, t.dtype, nbytes, segments)
        flat = t.detach().reshape(-1).view(torch.uint8)
        pos = 0
        for chunk, offset, length in segments:
            chunk.data[offset:offset + length].copy_(flat[pos:pos + length])
            chunk.live += 1
            pos += length
        lease_id = segments[0][0].lease_id
        self._blocks[lease_id].add(block)
        weakref.finalize(block, LeasedArena._release, self, segments)
        self.packed_bytes += nbytes
        self.peak_packed_bytes = max(self.peak_packed_bytes, self.packed_bytes)
        return block

    def unpack(self, obj):
        if not isinstance(obj, Block):
            return obj
        if obj.private is not None:
            return obj.private
        if len(obj.segments) == 1:
            chunk, offset, length = obj.segments[0]
            return chunk.data[offset:offset + length].view(obj.dtype).view(obj.shape)
        return self._gather(obj)

    # -- internals ---------------------------------------------------------------------

    def _allocate(self, nbytes: int, device: torch.device) -> list[tuple[_Chunk, int, int]] | None:
        leases = [cs for cs in self.chunks.values() if cs and cs[0].data.device == device]
        for chunks in leases:  # whole, if any chunk can hold it
            for c in chunks:
                if c.free >= nbytes:
                    return [self._take(c, nbytes)]
        for chunks in leases:  # split, but within one lease so a reclaim finds all of it
            if sum(max(c.free, 0) for c in chunks) < nbytes:
                continue
            segments, left = [], nbytes
            for c in sorted(chunks, key=lambda c: -c.free):
                take = min(left, c.free)
                if take <= 0:
                    break
                segments.append(self._take(c, take))
                left -= take
            if left == 0:
                return segments
            for c, offset, _ in reversed(segments):  # alignment ate the last bytes: undo
                c.used = offset
        return None

    @staticmethod
    def _take(c: _Chunk, length: int) -> tuple[_Chunk, int, int]:
        offset = c.used
        c.used = min(c.data.numel(), offset + -(-length // ALIGN) * ALIGN)
        return c, offset, length

    @staticmethod
    def _gather(block: Block) -> torch.Tensor:
        device = block.segments[0][0].data.device
        out = torch.empty(block.nbytes, dtype=torch.uint8, device=device)
        pos = 0
        for chunk, offset, length in block.segments:
            out[pos:pos + length].copy_(chunk.data[offset:offset + length])
            pos += length
        return out.view(block.dtype).view(block.shape)

    def _release(self, segments) -> None:
        for chunk, _, length in segments:
            chunk.live -= 1
            if chunk.live == 0:
                chunk.used = 0
        # Blocks moved out by a reclaim already left packed_bytes.
        if segments and segments[0][0].lease_id in self.chunks:
            self.packed_bytes -= sum(length for _, _, length in segments)
