"""How the finetune worker's process uses glibc malloc: freed memory goes back to the OS.

Training memory comes and goes in large blocks: a micro-batch's saved
activations (about 1.3 GB for 4 examples of 1024 tokens of the default model,
tensors of up to ~25 MB each) are allocated during its forward pieces and freed
after its backward; tokenising a large upload allocates and frees about 24 bytes
per token. glibc serves blocks above its mmap threshold with their own
mappings, returned on free, but it raises that threshold (up to 32 MB) each time
such a block is freed, so after the first large free the activations come from
its heaps, where freed memory stays mapped for reuse. The soak of 2026-11-30
saw the worker's RSS 2.3 GB above its start. Measured with
``benchmark/worker_memory.py`` (the soak's two jobs in one process, results in
``benchmark/results/2026-11-30-soak-2/``): with glibc's defaults the process
kept 3.0 GB private between micro-batches, when 0.1-0.3 GB of tensors were
alive; ``MALLOC_ARENA_MAX=2`` changed nothing (3.2 GB).

A fixed threshold (``MALLOC_MMAP_THRESHOLD_``, which also turns off glibc's
adjustment) puts every block of 4 MB or more in a mapping of its own, unmapped
on free: the same run kept 0.6 GB private between micro-batches (0.46 GB at
start), 1.2 GB inside the large job's micro-batch, and peaked at 2.7 GB RSS
instead of 4.1 GB, with no loss of training throughput (activation blocks are
written in full anyway, so fresh pages cost little beside the compute). Smaller
blocks, such as the tokenizer's per-token strings, still come from the heaps, so
the prepare thread gives its heap back with :func:`trim` once a job is
tokenised.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD_BYTES = 4 << 20
# Set in the worker's environment at spawn: glibc reads it when the process starts.
ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES)}

_libc = None


def trim() -> None:
    """Return the free pages of every malloc heap to the OS (no-op without glibc)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    trim_fn = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim_fn is not None:
        trim_fn(0)
