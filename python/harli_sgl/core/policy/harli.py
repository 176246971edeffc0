"""``harli``: Harli's policy, choosing serial, concurrent or hybrid arrangements.

Decode leaves compute idle; the worker harvests it by training *beside* decode
on its own share of the device (cores on a CPU host, SMs on a GPU). Each
iteration this policy picks the arrangement that trains the most while every
running request stays within the TPOT SLO, from the two-stage predictor:

1. **Idle** (nothing running or waiting): co-run on *every* core. Unlike a
   serial idle slot this never blocks the scheduler, so an arriving request is
   admitted at once; the worker's threads sit in SCHED_IDLE and yield to it.
   Every core must pay, like a top-up (5.): when the worker was measured to
   train on every core less than ``IDLE_WIDE_MIN_GAIN`` x as fast as on its
   share (both while idle), it stays on its share. Spreading it costs something at every arrival: the
   launch moves its threads back mid-piece, and until that piece ends its two
   OpenMP threads share one core (pieces of 30 ms ran 250-280 ms so in the
   2026-12-02 trace). On the 2-core host it bought nothing (7.3-8.2 units/ms on
   both cores against 7.2-9.4 on one). Both speeds expire with their window,
   so each is re-measured about once per window (``coordinator/speeds.py``).
2. **Prefill pending, nothing running**: co-run on the worker's share only,
   so the prefill gets decode's cores back without waiting for the worker.
3. **Decoding**: with ``target`` as in ``harli-serial`` (beta x SLO - margin,
   capped by the tightest request's deadline) and ``dc`` the predicted decode
   latency with the worker beside it (stage 1 + the concurrent stage 2 with its
   fast bias correction):

   * ``dc <= target``: *concurrent*, plus a serial top-up of the worker's
     next pieces that fits ``target - dc`` (*hybrid*) when stage 2 allows one
     and top-ups pay (below);
   * ``dc > target``: co-running would break the SLO (on the 2-core host this
     happens from about batch 6): stop at the current piece's end *before*
     the next iteration (``stop_wait``) and fall back to ``harli-serial``'s
     serial slot, or to nothing;
   * a batch-size bucket never measured co-running is explored only where
     decode alone leaves ``EXPLORE_SLACK`` of the target free.

   While requests wait for prefill, co-running continues where the current
   batch's co-run prediction fits (no serial top-up: it would delay the first
   token); otherwise it stops without waiting.
4. **Calibration**: co-running every iteration would starve stage 1 of
   iterations that ran alone, so every ``CALIBRATE_EVERY``-th decoding
   iteration stops co-running (waiting for the piece boundary) and runs alone.

5. **Top-ups must pay.** While a top-up runs, decode waits, and the co-run it
   replaces would have gone on training on the worker's share anyway. So a
   top-up gains only where the worker trains faster on the whole device than on
   its share: ``topup_units_per_ms >= TOPUP_MIN_GAIN x corun_units_per_ms``,
   both measured the same way over the same window (total units over total
   ms of the last ``SPEED_WINDOW_S``, ``coordinator/speeds.py``): the top-up's
   per ms the scheduler was blocked, so the wait for the co-run piece in flight
   counts against it, the co-run's per ms of its pieces. On a GPU the whole device
   is many times a share; on the 2-core host it was not: in the 2026-12-01 trace
   top-ups ran 11.9 units/ms on both cores against 12.4 on one core beside
   decode (``benchmark/trace_report.py``), so they bought no training and raised
   TPOT p50 to 63-83 ms (docs/benchmarks.md §2b). Every ``TOPUP_EXPLORE_EVERY``-th iteration
   that would top up still does, so the measurement follows the job.

6. **Margin** as in ``harli-serial``, over the co-run residuals of the last
   ``RESIDUAL_WINDOW_S`` only and capped at ``MARGIN_CAP`` of the SLO: a burst
   of bad predictions (a neighbour, a misplaced thread) must not shut training
   out for good, since a margin that forbids every arrangement would never see
   the new residuals that shrink it. The request deadlines and ``beta`` still
   protect the SLO beyond the cap.

Without a share (``--harli-cpu-split none``, a single core) this is exactly
``harli-serial``.
"""

from __future__ import annotations

import time

from harli_sgl.core.iteration import SlotWork
from harli_sgl.core.policy.base import INTERFERENCE_LIMIT, Arrangement, Grant, Plan, SlotContext
from harli_sgl.core.policy.decision import Decision
from harli_sgl.core.policy.harli_serial import MARGIN_FLOOR, HarliSerialPolicy

# Explore co-running at an unmeasured batch size only when decode alone uses at
# most this fraction of the target (interference measured on CPU reached 3x).
EXPLORE_SLACK = 0.5
CALIBRATE_EVERY = 25
RESIDUAL_WINDOW_S = 60.0
MARGIN_CAP = 0.25
TOPUP_MIN_GAIN = 1.1
TOPUP_EXPLORE_EVERY = 10
IDLE_WIDE_MIN_GAIN = 1.1


class HarliPolicy(HarliSerialPolicy):
    name = "harli"
    beside_decode = True
    RESIDUALS_KEPT = 400

    def __init__(self, config, predictor=None):
        super().__init__(config, predictor)
        self._busy_iterations = 0
        self._unpaid_topups = 0

    def margin_ms(self) -> float:
        now = time.monotonic()
        residuals = self.corun_residuals
        while residuals and now - residuals[0][0] > RESIDUAL_WINDOW_S:
            residuals.popleft()
        return self._margin_of([v for _, v in residuals], cap=MARGIN_CAP)

    def plan(self, ctx: SlotContext) -> Plan:
        self._weighed = (None, None)
        plan = self.weighed(self._plan(ctx))
        self.decisions[plan.reason] += 1
        self.last_decision = plan.reason
        return plan

    def _plan(self, ctx: SlotContext) -> Plan:
        share = ctx.corun_share
        if share <= 0:
            grant, decision = self._decide(ctx)
            return self._serial(grant, decision)
        if ctx.running == 0:
            if ctx.waiting == 0:
                if not self._every_core_pays(ctx):
                    return Plan(Arrangement.CONCURRENT, share=share,
                                decision=Decision.IDLE_CORUN_SHARE)
                return Plan(Arrangement.CONCURRENT, share=1.0, decision=Decision.IDLE_CORUN)
            if self.predictor.concurrent_bias(share) > INTERFERENCE_LIMIT * self.slo:
                # Co-running has just been measured far slower than modelled: keep
                # it away from the prefill until the evidence expires.
                return Plan(Arrangement.NONE, decision=Decision.PREFILL_PENDING_INTERFERENCE)
            return Plan(Arrangement.CONCURRENT, share=share, decision=Decision.PREFILL_CORUN)
        f = ctx.next_iteration
        if not self.predictor.ready(1) or not self.predictor.confident(f):
            # Stage 1 learns only from iterations that ran alone.
            return Plan(Arrangement.NONE, stop_wait=True, decision=Decision.UNSEEN_BATCH_SIZE)
        self._busy_iterations += 1
        if not ctx.waiting and self._busy_iterations % CALIBRATE_EVERY == 0:
            return Plan(Arrangement.NONE, stop_wait=True, decision=Decision.CALIBRATE)
        target = self.target_ms(ctx)
        decode = self.predictor.predict_decode(f)
        if self.predictor.concurrent_confident(f, share):
            corun = self.predictor.predict_concurrent(f, share)
            fits = corun <= target
        else:
            corun = decode
            fits = decode <= EXPLORE_SLACK * target
        self._weighed = (target, corun)
        if ctx.waiting:
            if fits:
                return Plan(Arrangement.CONCURRENT, share=share,
                            decision=Decision.PREFILL_PENDING_CORUN)
            return Plan(Arrangement.NONE, decision=Decision.PREFILL_PENDING)
        if fits:
            work = self._top_up(ctx, target - corun)
            if work.pieces and not self._topup_pays(ctx):
                return Plan(Arrangement.CONCURRENT, share=share,
                            decision=Decision.CONCURRENT_TOPUP_NO_GAIN)
            if work.pieces:
                return Plan(Arrangement.HYBRID, Grant(work.units, target - corun, planned=work),
                            share=share, decision=Decision.HYBRID)
            return Plan(Arrangement.CONCURRENT, share=share, decision=Decision.CONCURRENT)
        grant, decision = self._decide(ctx)
        if grant is None:
            self._weighed = (target, corun)  # what ruled co-running out
        # Co-running through the next iteration would break the SLO: stop first.
        return self._serial(grant, decision, stop_wait=True, corun_interference=True)

    @staticmethod
    def _every_core_pays(ctx: SlotContext) -> bool:
        """Whether the idle worker trains enough faster on every core than on its share
        (see 1. above). Each speed is measured by running so: every core while its
        speed is unknown, then the share while its own is, then the faster."""
        wide, narrow = ctx.idle_every_core_units_per_ms, ctx.idle_share_units_per_ms
        if wide is None or narrow is None:
            return wide is None
        return wide >= IDLE_WIDE_MIN_GAIN * narrow

    def _topup_pays(self, ctx: SlotContext) -> bool:
        """Whether a top-up trains more than the co-run it interrupts (see 5. above)."""
        topup, corun = ctx.topup_units_per_ms, ctx.corun_units_per_ms
        if topup is None or corun is None or topup >= TOPUP_MIN_GAIN * corun:
            return True
        self._unpaid_topups += 1
        return self._unpaid_topups % TOPUP_EXPLORE_EVERY == 0

    def _top_up(self, ctx: SlotContext, budget_ms: float) -> SlotWork:
        if budget_ms <= MARGIN_FLOOR * self.slo or not self.predictor.ready(2):
            return SlotWork()
        return self.pieces_that_fit(ctx.next_pieces, budget_ms)

    @staticmethod
    def _serial(grant: Grant | None, decision: Decision, **kw) -> Plan:
        if grant is None:
            return Plan(Arrangement.NONE, decision=decision, **kw)
        return Plan(Arrangement.SERIAL, serial=grant, decision=decision, **kw)

    def grant(self, ctx: SlotContext) -> Grant | None:
        return self.plan(ctx).serial
