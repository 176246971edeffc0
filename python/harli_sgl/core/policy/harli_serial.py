"""``harli-serial``: the QoS-guaranteed, throughput-maximising policy with serial slots only.

This is Harli's policy restricted to the serial arrangement (the ``harli``
policy, :mod:`harli_sgl.core.policy.harli`, extends it with co-running). Each
iteration it grants the largest slot whose *predicted co-run latency*
keeps the next token within the SLO, minus a guard margin:

1. **Target.** The next iteration may take ``beta * SLO - margin``, and never
   more than the tightest running request's deadline allows (a request that
   just absorbed a prefill spike is owed time; see RequestTracker).
2. **Slot.** Stage 1 predicts the decode iteration alone; the remaining budget
   is filled with the worker's *next pieces*, in order, while stage 2 says the
   co-run iteration still fits. The grant names exactly those units, and its
   wall-clock bound is the budget itself, which the worker also enforces.
3. **Margin** adapts to the error actually observed. The SLO bounds a
   request's *average* TPOT, so the margin covers the error of an average
   over ``AVERAGED_TOKENS`` iterations: the mean residual (observed - predicted
   co-run latency; positive = under-prediction) plus two standard errors,
   floored at 3% of the SLO. A single slow iteration is not covered by the
   margin but repaid: it tightens the affected requests' deadlines (step 1)
   until they have caught up. While stage 2 is young the margin is wide (15%).
4. **Feedback.** The deadlines of step 1 hold every request at
   ``beta * SLO - 3%``; a finished request at or above 99% of the SLO, to whose
   TPOT finetune work added at least the margin floor (3% of the SLO, the
   policy's own noise level), means the model is wrong somewhere, so ``beta``
   backs off by 10% at once, before a violation, and recovers by 0.02 per request
   that finishes normally. A near miss that decode alone produced (a slower host,
   a prefill burst), or beside which work ran only a little, is no sign that the
   slots were too long; backing off for it closed co-running as if the policy had
   erred (benchmarks §S1d, §S1e).

Prefill/extend is handled explicitly: while requests wait for prefill no slot
is granted, because the slot would delay their first token and the coming
prefill iteration already consumes the running requests' slack. No slack
means no slot. With nothing running or waiting the server is idle and the slot
is full-size (``--harli-idle-slot-ms``). Until the predictor has data, busy
slots are exploratory: one piece, only when predicted decode leaves more than
half the target free; a batch size stage 1 has not seen yet runs alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from typing import ClassVar

import numpy as np

from harli_sgl.core.iteration import SlotWork
from harli_sgl.core.policy.base import Arrangement, Grant, Plan, SlotContext, SlotPolicy
from harli_sgl.core.policy.baselines import UNBOUNDED_UNITS
from harli_sgl.core.policy.decision import Decision

MARGIN_FLOOR = 0.03
MARGIN_COLD = 0.15
AVERAGED_TOKENS = 16
BETA_MIN = 0.6
NEAR_MISS = 0.99


class HarliSerialPolicy(SlotPolicy):
    name = "harli-serial"
    RESIDUALS_KEPT: ClassVar[int] = 200

    def __init__(self, config, predictor=None):
        super().__init__(config, predictor)
        if predictor is None:
            raise ValueError("the harli policy needs a latency predictor")
        self.beta = 1.0
        self.decisions: Counter[str] = Counter()
        self.last_decision: str | None = None
        # (when, observed - predicted) of iterations that ran finetune work.
        self.corun_residuals: deque[tuple[float, float]] = deque(maxlen=self.RESIDUALS_KEPT)
        # (target, expected) the last decision weighed, for the plan's trace fields.
        self._weighed: tuple[float | None, float | None] = (None, None)

    @property
    def slo(self) -> float:
        return self.config.tpot_slo_ms

    def margin_ms(self) -> float:
        return self._margin_of([v for _, v in self.corun_residuals])

    def _margin_of(self, residuals: list[float], cap: float | None = None) -> float:
        """Bias plus two standard errors of a 16-token average, floored (and optionally capped)."""
        if len(residuals) < 10:
            return MARGIN_COLD * self.slo
        r = np.asarray(residuals)
        error_of_average = r.mean() + 2.0 * r.std() / np.sqrt(AVERAGED_TOKENS)
        margin = max(MARGIN_FLOOR * self.slo, float(error_of_average))
        return margin if cap is None else min(cap * self.slo, margin)

    def target_ms(self, ctx: SlotContext) -> float:
        target = self.beta * self.slo - self.margin_ms()
        if ctx.request_slack_ms is not None:
            target = min(target, ctx.request_slack_ms - MARGIN_FLOOR * self.slo)
        return target

    def plan(self, ctx: SlotContext) -> Plan:
        self._weighed = (None, None)
        grant, decision = self._decide(ctx)
        self.decisions[decision.value] += 1
        self.last_decision = decision.value
        arrangement = Arrangement.NONE if grant is None else Arrangement.SERIAL
        return self.weighed(Plan(arrangement, serial=grant, decision=decision))

    def grant(self, ctx: SlotContext) -> Grant | None:
        return self.plan(ctx).serial

    def weighed(self, plan: Plan) -> Plan:
        """``plan`` with what its decision weighed (see :class:`Plan`), if it weighed any."""
        target, expected = self._weighed
        if target is None:
            return plan
        return dataclasses.replace(plan, target_ms=target, expected_ms=expected)

    def _decide(self, ctx: SlotContext) -> tuple[Grant | None, Decision]:
        if ctx.running == 0 and ctx.waiting == 0:
            return Grant(UNBOUNDED_UNITS, self.config.idle_slot_ms), Decision.IDLE
        if ctx.waiting:
            return None, Decision.PREFILL_PENDING
        if not ctx.next_pieces or not self.predictor.ready(1):
            return None, Decision.PREDICTOR_COLD
        if not self.predictor.confident(ctx.next_iteration):
            # A batch size stage 1 has not seen: run it alone, which teaches stage 1.
            return None, Decision.UNSEEN_BATCH_SIZE
        target = self.target_ms(ctx)
        decode = self.predictor.predict_decode(ctx.next_iteration)
        budget = target - decode
        self._weighed = (target, decode)
        if budget <= 0:
            return None, Decision.NO_SLACK
        if not self.predictor.ready(2):
            # Explore: one piece, only where slack is ample, to teach stage 2.
            kind, units = ctx.next_pieces[0]
            if decode > 0.5 * target:
                return None, Decision.PREDICTOR_COLD
            return Grant(units, budget, planned=SlotWork().plus(kind, units)), Decision.EXPLORE
        work = self.pieces_that_fit(ctx.next_pieces, budget)
        if work.pieces == 0:
            return None, Decision.SLACK_BELOW_ONE_PIECE
        self._weighed = (target, decode + self.predictor.slot_cost(work))
        return Grant(work.units, budget, planned=work), Decision.GRANTED

    def pieces_that_fit(self, pieces: tuple[tuple[int, int], ...], budget_ms: float) -> SlotWork:
        """The longest run of ``pieces``, in order, whose predicted cost fits ``budget_ms``."""
        work = SlotWork()
        for kind, units in pieces:
            nxt = work.plus(kind, units)
            if self.predictor.slot_cost(nxt) > budget_ms:
                break
            work = nxt
        return work

    def observe_corun(self, predicted_ms: float, observed_ms: float) -> None:
        self.corun_residuals.append((time.monotonic(), observed_ms - predicted_ms))

    def observe_request(self, tpot_ms: float, work_ms_per_token: float) -> None:
        if tpot_ms >= NEAR_MISS * self.slo and work_ms_per_token >= MARGIN_FLOOR * self.slo:
            self.beta = max(BETA_MIN, self.beta * 0.9)
        elif tpot_ms < (NEAR_MISS - 0.01) * self.slo:
            self.beta = min(1.0, self.beta + 0.02)

    def status(self) -> dict:
        return {"policy": self.name, "beta": round(self.beta, 3),
                "margin_ms": round(self.margin_ms(), 3), "decisions": dict(self.decisions),
                "last_decision": self.last_decision}
