"""The slot-policy interface: one decision per scheduler iteration.

After every scheduler iteration (and on every idle pass) the coordinator asks
the policy how much finetune work may run before the next iteration starts.
A policy sees only engine-agnostic facts (:class:`SlotContext`): what the next
decode iteration will look like, whether requests are waiting, and what the
worker can do. It answers with a :class:`Grant` or ``None`` (no slot).

Contract for implementations:

* ``grant`` is on the decode hot path: O(1), no I/O, no allocation-heavy work.
* A grant's ``budget_units`` is finetune work in token-layers (see
  ``core/message.py``); ``budget_ms`` is a hard wall-clock bound the worker
  also respects. Grants smaller than ``ctx.worker_min_units`` are useless (the
  worker cannot run a partial piece) and must not be issued.
* ``observe_iteration`` / ``observe_slot`` feed measurements back; policies
  that learn (harli) update their models there.
* ``free_run = True`` means the worker trains without grants (greedy).

Policies are picked by name from :mod:`harli_sgl.core.policy.registry`; the
baseline modes are policies like any other, never ``if mode == ...`` branches
in the scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from harli_sgl.config import HarliConfig


@dataclass(frozen=True, slots=True)
class IterationFeatures:
    """An iteration's batch as the latency predictor sees it."""

    batch_size: int          # decode requests in the batch
    context_tokens: int      # total KV tokens those requests attend over
    extend_tokens: int = 0   # prefill/extend tokens computed in the same iteration


@dataclass(frozen=True, slots=True)
class SlotContext:
    next_iteration: IterationFeatures
    running: int             # requests being decoded
    waiting: int             # requests queued for prefill
    worker_min_units: int    # smallest useful grant (one piece)
    worker_units_per_ms: float | None  # measured finetune speed, if known


@dataclass(frozen=True, slots=True)
class Grant:
    budget_units: int
    budget_ms: float
    device_share: float = 1.0


class SlotPolicy(ABC):
    name: ClassVar[str]
    free_run: ClassVar[bool] = False

    def __init__(self, config: HarliConfig):
        self.config = config

    @abstractmethod
    def grant(self, ctx: SlotContext) -> Grant | None:
        """The slot to run before the next iteration, or None."""

    def observe_iteration(self, features: IterationFeatures, duration_ms: float,
                          slot_ms: float, slot_units: int) -> None:
        """An iteration completed; ``slot_*`` describe the slot that ran inside its cadence."""

    def status(self) -> dict:
        return {"policy": self.name}
