"""Checkpoint and adapter writes, on a thread of their own, off the worker's message loop.

A checkpoint or a finished adapter is written as a directory (safetensors,
``torch.save`` of the optimizer state, an fsync of every file, one rename):
tens of milliseconds on a fast disk, seconds on a slow or full one. On the
message loop that is time in which the worker answers no grant and no message
and no other job trains. So the loop only takes a
:class:`~harli_sgl.core.trainer.snapshot.Snapshot` (copies of the LoRA and
optimizer tensors, cheap for LoRA) and hands it to this writer; the live
tensors go on training.

One thread writes for every job, in the order the writes were submitted, so a
full disk is not hit by several writers at once and writes never compete with
the loop for more than one core. The caller keeps at most one write per job in
flight and reads the outcome from the returned future between slots, so it
records a checkpoint in the store only once its directory has been renamed into
place: a stored checkpoint always names a complete directory.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import Future, ThreadPoolExecutor

from harli_sgl.core.trainer.snapshot import Snapshot


class SnapshotWriter:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="harli-write")
        self._pending: set[Future] = set()

    def submit(self, snapshot: Snapshot, path: str) -> Future:
        """Write ``snapshot`` to ``path`` in the background; the future's result is ``path``,
        or it raises what the write raised (e.g. ENOSPC)."""
        future = self._pool.submit(self._write, snapshot, path)
        self._pending = {f for f in self._pending if not f.done()} | {future}
        return future

    def _write(self, snapshot: Snapshot, path: str) -> str:
        snapshot.write(path)
        return path

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every submitted write; True if none is left."""
        _, left = concurrent.futures.wait(self._pending, timeout=timeout_s)
        return not left

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
