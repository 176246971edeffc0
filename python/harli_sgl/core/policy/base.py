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
from harli_sgl.core.iteration import IterationFeatures, SlotWork


@dataclass(frozen=True, slots=True)
class SlotContext:
    next_iteration: IterationFeatures
    running: int             # requests being decoded
    waiting: int             # queued requests the next iteration will prefill (room permitting)
    worker_min_units: int    # smallest useful grant (one piece)
    worker_units_per_ms: float | None  # measured finetune speed, if known
    # The pieces the worker would run next, as (CostKind, units), in order.
    next_pieces: tuple[tuple[int, int], ...] = ()
    # Time until the earliest running request's next token is due (see RequestTracker).
    request_slack_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    budget_units: int
    budget_ms: float
    device_share: float = 1.0
    # What the policy expects the slot to run (for the co-run model's bookkeeping).
    planned: SlotWork | None = None


class SlotPolicy(ABC):
    name: ClassVar[str]
    free_run: ClassVar[bool] = False

    def __init__(self, config: HarliConfig, predictor=None):
        self.config = config
        self.predictor = predictor

    @abstractmethod
    def grant(self, ctx: SlotContext) -> Grant | None:
        """The slot to run before the next iteration, or None."""

    def observe_request(self, tpot_ms: float) -> None:
        """A request finished with this TPOT (feedback for policies that adapt)."""

    def observe_corun(self, predicted_ms: float, observed_ms: float) -> None:
        """An iteration with a slot took ``observed_ms``; the predictor had said ``predicted_ms``."""

    def status(self) -> dict:
        return {"policy": self.name}
