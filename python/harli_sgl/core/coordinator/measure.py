"""Iteration measurement: one launch-to-launch interval is one measured iteration.

A launch closes the interval the previous launch opened. What ran inside it is
known from spans, not flags: the serial slots the coordinator waited for, the
pauses spent waiting for a co-run stop (neither is decode time), and the
worker's co-run pieces laid over the interval by :class:`CoRunTracker`. The
closed iteration is classified by that arrangement and fed to the matching
predictor stage, to the policy's error margin and to the metrics; with
``HARLI_TRACE_ITERATIONS`` set each one is also written as a JSON line.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from harli_sgl import env
from harli_sgl.core.corun import CoRunTracker
from harli_sgl.core.iteration import NO_SLOT, IterationFeatures, SlotWork
from harli_sgl.core.message.from_worker import SlotReport
from harli_sgl.core.metrics import ColocationMetrics
from harli_sgl.core.policy.base import NO_PLAN, Arrangement, Plan, SlotPolicy
from harli_sgl.core.predictor.base import LatencyPredictor

# An iteration with less of its decode time beside worker pieces than this ran alone.
MIN_OVERLAP = 0.02


class ClosedIteration(NamedTuple):
    """What a closed interval was: its arrangement, and the time finetune work added to it.

    ``work_ms``: how much longer the interval took than stage 1 predicts for its decode
    alone, as placed (0 when nothing ran beside it, never negative). Summed over a
    request's iterations it says how much of the request's TPOT its slots and co-running
    cost (see :class:`~harli_sgl.core.request_tracker.RequestTracker`).
    """

    arrangement: Arrangement
    work_ms: float


def _span_ms(spans: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in spans) * 1000.0


class IterationMeter:
    def __init__(self, predictor: LatencyPredictor, corun: CoRunTracker, metrics: ColocationMetrics):
        self.predictor = predictor
        self.corun = corun
        self.metrics = metrics
        self.launch: tuple[float, IterationFeatures] | None = None
        self.wide = False  # the open interval's batch ran on every core
        self.work = NO_SLOT  # slot work run since the last launch
        self.serial_spans: list[tuple[float, float]] = []
        self.paused_spans: list[tuple[float, float]] = []
        self.overrun = False
        # The plan made for the next launch, and the one the open interval runs under.
        self.next_plan = self.plan = NO_PLAN
        trace = env.TRACE_ITERATIONS.get()
        self._trace = open(trace, "a", buffering=1) if trace else None

    @property
    def server_idle(self) -> bool:
        """No interval is open: nothing has launched since the last idle pass."""
        return self.launch is None

    def forget(self) -> None:
        """Nothing ran (or the policy changed): the next launch starts a fresh measurement."""
        self.launch = None

    def planned(self, plan: Plan) -> None:
        """The policy's plan until the next launch: the interval that launch opens runs
        under it (traced with the interval, so a trace says why it ran as it did)."""
        self.next_plan = plan

    def begin(self, features: IterationFeatures, now: float, wide: bool) -> None:
        self.launch = (now, features)
        self.plan, self.next_plan = self.next_plan, NO_PLAN
        self.wide = wide
        self.work = NO_SLOT
        self.serial_spans = []
        self.paused_spans = []
        self.overrun = False

    def add_work(self, work: SlotWork) -> None:
        self.work = self.work + work

    def close(self, now: float, policy: SlotPolicy, profiling: bool,
              worker_busy: bool) -> ClosedIteration | None:
        """Close the open interval at ``now`` (a launch) and learn from it; what it was
        (:attr:`Arrangement.NONE`: decode ran alone), or None when no interval was open."""
        if self.launch is None:
            return None
        t0, f0 = self.launch
        paused_ms = _span_ms(self.paused_spans)
        interval_ms = (now - t0) * 1000.0 - paused_ms
        work = self.work
        overlap = self.corun.overlap(t0, now, self.serial_spans + self.paused_spans,
                                     self.corun.synthetic or worker_busy)
        p = self.predictor
        ran_work = overlap.total >= MIN_OVERLAP or work.units > 0
        # Decode alone as placed, predicted before this interval teaches stage 1; only for
        # intervals that ran work (most do not: no extra prediction on decode's hot path).
        alone_ms = p.predict_decode(f0, self.wide) if ran_work else 0.0
        serial_ms = _span_ms(self.serial_spans)
        if overlap.total >= MIN_OVERLAP:
            arrangement = Arrangement.HYBRID if work.units else Arrangement.CONCURRENT
            predicted = p.predict_decode(f0) + p.interference(f0, overlap.share, overlap) + \
                p.slot_cost(work)
            if not profiling and not self.overrun:
                # The margin tracks live prediction error; an overrun is the worker's
                # fault, repaid through the request deadlines, not the model's error.
                policy.observe_corun(predicted, interval_ms)
            p.observe_concurrent(f0, interval_ms - serial_ms, overlap, serial=work,
                                 interval_ms=interval_ms)
        else:
            arrangement = Arrangement.SERIAL if work.units else Arrangement.NONE
            predicted = p.predict_corun(f0, work, self.wide)
            if work.units and not profiling:
                policy.observe_corun(predicted, interval_ms)
            # A widened iteration teaches stage 1 too, through its placement term: under a
            # serial-only policy every iteration with a job is wide, and under ``harli`` most
            # that it leaves alone are (10x the narrow ones in the 2026-12-02 trace).
            p.observe(f0, interval_ms, work, wide=self.wide)
        work_ms = max(0.0, interval_ms - alone_ms) if ran_work else 0.0
        if not profiling:
            self.corun.account(arrangement.value, interval_ms)
            self.metrics.decode_ran(interval_ms - serial_ms)
        self._write({
            "t0": t0, "t": now, "bs": f0.batch_size, "ctx": f0.context_tokens, "ext": f0.extend_tokens,
            "arrangement": arrangement.value, "fwd": work.units_fwd, "bwd": work.units_bwd,
            "head": work.units_head, "overlap": round(overlap.total, 4), "share": overlap.share,
            "serial_ms": serial_ms, "interval_ms": interval_ms, "predicted_ms": predicted,
            "profiling": profiling, "policy": policy.name, "overrun": self.overrun, "wide": self.wide,
            "work_ms": work_ms, "decision": self.plan.reason, "target_ms": self.plan.target_ms,
            "expected_ms": self.plan.expected_ms})
        return ClosedIteration(arrangement, work_ms)

    def trace_piece(self, msg: SlotReport) -> None:
        self._write({"piece": True, "start": msg.started_at, "end": msg.ended_at, "units": msg.units,
                     "job_id": msg.job_id, "share": self.corun.share})

    def _write(self, row: dict) -> None:
        if self._trace is not None:
            self._trace.write(json.dumps(row) + "\n")
