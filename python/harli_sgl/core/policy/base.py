"""The slot-policy interface: one decision per scheduler iteration.

After every scheduler iteration (and on every idle pass) the coordinator asks
the policy how finetune work runs until the next iteration. A policy sees only
engine-agnostic facts (:class:`SlotContext`): what the next decode iteration
will look like, whether requests are waiting, what the worker can do and
whether it is co-running now. It answers with a :class:`Plan` in one of four
arrangements:

* ``none``: no finetune work before the next iteration (co-running stops);
* ``serial``: a slot (:class:`Grant`) between iterations; TPOT = decode + slot;
* ``concurrent``: the worker trains piece after piece on its own share of the
  device (cores on CPU, SMs on GPU) while decode runs on the rest;
* ``hybrid``: concurrent during the decode forward, plus a serial top-up with
  the slack the co-run iteration leaves.

Serial-only policies implement :meth:`SlotPolicy.grant`; the default
:meth:`SlotPolicy.plan` wraps it. Contract for implementations:

* ``plan``/``grant`` are on the decode hot path: O(1), no I/O.
* A grant's ``budget_units`` is finetune work in token-layers (see
  ``core/message/``); ``budget_ms`` is a hard wall-clock bound the worker
  also respects. Grants smaller than ``ctx.worker_min_units`` are useless (the
  worker cannot run a partial piece) and must not be issued.
* ``observe_request`` / ``observe_corun`` feed measurements back; policies
  that learn (harli) update their models there.
* ``free_run = True`` means the worker trains without grants (greedy).
* ``lends_pool = False`` means no KV page is lent to the worker (off).
* :meth:`SlotPolicy.corun_beside_launch` decides whether a worker co-running on
  every core of an idle server keeps co-running, on its share, beside a batch
  that launches.

Policies are picked by name from :mod:`harli_sgl.core.policy.registry`; the
baseline modes are policies like any other, never ``if mode == ...`` branches
in the scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from harli_sgl.config import HarliConfig
from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.policy.decision import CORUN_INTERFERENCE_PREFIX, MEASURES_DECODE_ALONE, Decision


@dataclass(frozen=True, slots=True)
class SlotContext:
    next_iteration: IterationFeatures
    running: int             # requests being decoded
    waiting: int             # queued requests the next iteration will prefill (room permitting)
    worker_min_units: int    # smallest useful grant (one piece)
    # The pieces the worker would run next, as (CostKind, units), in order.
    next_pieces: tuple[tuple[int, int], ...] = ()
    # Time until the earliest running request's next token is due (see RequestTracker).
    request_slack_ms: float | None = None
    # The worker's share of the device for co-running (0: no split, serial only).
    corun_share: float = 0.0
    # Measured finetune speeds (total units per total ms of wall time over one recent
    # window, coordinator/speeds.py), None until measured: a
    # hybrid top-up per ms the scheduler was blocked for it (the wait for the co-run
    # piece in flight included), and co-run pieces on the worker's share.
    topup_units_per_ms: float | None = None
    corun_units_per_ms: float | None = None
    # The same estimator for co-run pieces on the idle server: on every core, and on the
    # worker's share (None until enough piece time is in the window).
    idle_every_core_units_per_ms: float | None = None
    idle_share_units_per_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    budget_units: int
    budget_ms: float
    # What the policy expects the slot to run (for the co-run model's bookkeeping).
    planned: SlotWork | None = None


class Arrangement(str, Enum):
    NONE = "none"
    SERIAL = "serial"
    CONCURRENT = "concurrent"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Plan:
    """How finetune work runs until the next iteration.

    ``serial`` is the slot (serial) or the top-up (hybrid). ``share`` is the
    worker's share of the device while co-running (1.0 lets it use every core,
    e.g. while the server is idle). ``stop_wait``: when co-running stops, wait
    for the running piece to end before the next iteration (because running
    beside it would break the SLO), instead of letting that one piece overlap.
    ``decision`` says why; ``corun_interference`` that it is the serial fallback
    taken because co-running beside this batch would break the SLO. ``target_ms``
    and ``expected_ms`` are what the decision weighed, where the policy weighed
    them: the time the next iteration may take, and the predicted time with the
    worker beside it (``None`` where no prediction decided). They change nothing
    that runs; the iteration trace records them, so a trace says why an iteration
    ran as it did, not only how.
    """

    arrangement: Arrangement
    serial: Grant | None = None
    share: float = 0.0
    stop_wait: bool = False
    decision: Decision | None = None
    corun_interference: bool = False
    target_ms: float | None = None
    expected_ms: float | None = None

    @property
    def concurrent(self) -> bool:
        return self.arrangement in (Arrangement.CONCURRENT, Arrangement.HYBRID)

    @property
    def leaves_decode_alone(self) -> bool:
        """Nothing trains beside or before the next iteration, and it is not one kept on
        decode's cores to teach stage 1: decode may use every core for it."""
        return self.arrangement == Arrangement.NONE and self.decision not in MEASURES_DECODE_ALONE

    @property
    def reason(self) -> str:
        """The decision's name as the status reports it ("" when the plan has none)."""
        if self.decision is None:
            return ""
        return CORUN_INTERFERENCE_PREFIX * self.corun_interference + self.decision.value


NO_PLAN = Plan(Arrangement.NONE)


# Co-running measured slower than modelled by more than this fraction of the SLO (the
# predictor's fast bias correction) keeps the worker away from decode and prefill.
INTERFERENCE_LIMIT = 0.25


class SlotPolicy(ABC):
    name: ClassVar[str]
    free_run: ClassVar[bool] = False
    lends_pool: ClassVar[bool] = True
    # Whether the worker ever trains *beside* decode under this policy (co-running or
    # free-run). A policy that only runs serial slots (or nothing) has no use for a core
    # split, so decode keeps every core while it is in force (coordinator.decode_on_every_cpu).
    beside_decode: ClassVar[bool] = False
    # A fixed partition (spatial: what a static MPS or core split does) keeps decode and
    # prefill on their own cores whatever runs: no prefill on every core.
    fixed_partition: ClassVar[bool] = False

    def __init__(self, config: HarliConfig, predictor=None):
        self.config = config
        self.predictor = predictor

    def plan(self, ctx: SlotContext) -> Plan:
        """The arrangement until the next iteration (serial-only policies: their grant)."""
        grant = self.grant(ctx)
        return NO_PLAN if grant is None else Plan(Arrangement.SERIAL, serial=grant)

    @abstractmethod
    def grant(self, ctx: SlotContext) -> Grant | None:
        """The serial slot to run before the next iteration, or None."""

    def corun_beside_launch(self, share: float) -> bool:
        """A batch launches while the worker co-runs on every core of the idle server:
        keep it co-running on ``share`` beside that batch (True), or stop it (False)
        because co-running on its share was just measured far slower than modelled."""
        return not self.predictor.concurrent_bias(share) > INTERFERENCE_LIMIT * self.config.tpot_slo_ms

    def observe_request(self, tpot_ms: float, work_ms_per_token: float) -> None:
        """A request finished with this TPOT (feedback for policies that adapt), of which
        finetune work beside it cost about ``work_ms_per_token`` (measured iterations'
        time beyond stage 1's decode alone, over its tokens after the first)."""

    def observe_corun(self, predicted_ms: float, observed_ms: float) -> None:
        """An iteration with a slot took ``observed_ms``; the predictor had said ``predicted_ms``."""

    def status(self) -> dict:
        return {"policy": self.name}
