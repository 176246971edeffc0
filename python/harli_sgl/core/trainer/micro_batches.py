"""Which examples each optimizer step trains, and how they are split into micro-batches.

The schedule is a pure function of ``(seed, epoch, step)``: step ``s`` of epoch
``e`` trains ``epoch_order(n, seed, e)[s * batch_size:(s + 1) * batch_size]``
(:class:`StepSchedule`), which is what lets a checkpoint resume exactly.

A step trains ``batch_size`` examples; the worker runs them ``micro_batch_size``
at a time, and each micro-batch's saved activations stay alive from its first
forward piece to its last backward piece. They grow with the micro-batch's
*padded tokens* (rows x its longest row), not with its example count: on
SmolLM2 a step saves ~2.4 MB of activations per token (docs/benchmarks.md §S5),
so four 1024-token examples held 6-7 GB in the worker during the soak (§S7),
where four 100-token chats hold ~1 GB. ``micro_batch_tokens`` bounds that: a
micro-batch also closes before its padded tokens would pass the bound (an
example longer than the bound is a micro-batch of its own).

The split does not change what is learned: each micro-batch's loss is divided by
the supervised tokens of the whole step (``chunked.py``), so the accumulated
gradient is the same one forward of the whole batch would give, up to float
rounding. The order of the examples is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataPosition, epoch_order


def split(items: Sequence[int], length: Callable[[int], int], max_items: int,
          max_tokens: int | None = None, rows_per_item: int = 1) -> list[list[int]]:
    """``items`` in order, in groups of at most ``max_items`` whose padded tokens
    (``rows_per_item`` x items x the longest ``length``) stay within ``max_tokens``.

    ``rows_per_item`` is 2 for DPO, whose item is a pair of sequences padded together.
    """
    groups: list[list[int]] = []
    group: list[int] = []
    longest = 0
    for item in items:
        n = length(item)
        wider = max(longest, n)
        full = len(group) >= max_items or (
            max_tokens is not None and group and rows_per_item * (len(group) + 1) * wider > max_tokens)
        if full:
            groups.append(group)
            group, wider = [], n
        group.append(item)
        longest = wider
    if group:
        groups.append(group)
    return groups


class StepSchedule:
    """The items (example or pair indices) of each step, one list per micro-batch.

    Args:
        n_items: examples (or DPO pairs) in the training set.
        length: an item's padded length (a pair's: its longer sequence).
        rows_per_item: sequences per item (2 for a DPO pair).
    """

    def __init__(self, n_items: int, config: TrainConfig, length: Callable[[int], int],
                 rows_per_item: int = 1):
        self.n_items, self.config = n_items, config
        self.length, self.rows_per_item = length, rows_per_item
        self._order: tuple[int, list[int]] | None = None  # (epoch, its order), the last one used

    def groups(self, position: DataPosition) -> list[list[int]]:
        cfg = self.config
        if self._order is None or self._order[0] != position.epoch:
            self._order = (position.epoch, epoch_order(self.n_items, cfg.seed, position.epoch))
        chosen = self._order[1][position.step * cfg.batch_size:(position.step + 1) * cfg.batch_size]
        return split(chosen, self.length, cfg.micro_batch_size, cfg.micro_batch_tokens,
                     self.rows_per_item)
