"""How many free KV pages may be lent: free minus what serving will need soon.

Serving's near-term demand is known exactly from its queues: every running
request may still generate up to its remaining ``max_new_tokens``, and every
queued request needs its prompt plus its ``max_new_tokens``. On top of that a
guard (a fraction of the pool) absorbs arrivals between two checks. Pages
beyond that watermark are lendable; when demand rises above what is free, the
difference must be reclaimed. Lending happens in whole quanta of contiguous
pages so each chunk can hold an activation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Watermarks:
    quantum_pages: int = 1024
    guard_fraction: float = 0.10
    max_lent_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.quantum_pages < 1:
            raise ValueError("quantum_pages must be >= 1")
        if not 0 <= self.guard_fraction < 1 or not 0 <= self.max_lent_fraction <= 1:
            raise ValueError("fractions must be in [0, 1)")

    def reserve_pages(self, total_pages: int, page_tokens: int, running_remaining: Iterable[int],
                      waiting_demand: Iterable[int]) -> int:
        """Pages serving may need soon (rounded up), guard included."""
        tokens = sum(running_remaining) + sum(waiting_demand)
        return -(-tokens // page_tokens) + int(self.guard_fraction * total_pages)

    def to_lend(self, free_pages: int, reserve: int, leased: int, total_pages: int,
                wanted: int) -> int:
        """Pages to lend now (a multiple of the quantum, possibly 0)."""
        room = min(free_pages - reserve, int(self.max_lent_fraction * total_pages) - leased, wanted)
        return max(0, room // self.quantum_pages * self.quantum_pages)

    def to_reclaim(self, free_pages: int, reserve: int) -> int:
        """Pages to take back because serving's demand no longer fits in what is free."""
        return max(0, reserve - free_pages)
