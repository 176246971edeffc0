"""Per-iteration co-location logic: measure, predict, decide, run the slot.

The coordinator is the engine-agnostic half of the HarliScheduler. The SGLang
subclass reduces each batch to :class:`IterationFeatures` and calls:

* :meth:`on_launch` when a batch starts: the launch-to-launch interval that
  just ended is one measured iteration (its batch, the slot work that ran
  inside it, its duration) and feeds the latency predictor and the policy;
* :meth:`on_tokens` after results are processed: per-request token timing;
* :meth:`after_iteration` / :meth:`on_idle`: pump the worker's messages, let
  the supervisor detect deaths, ask the policy, and run the slot.

Slots run *serially*: the grant is sent and the scheduler blocks until the
worker's report (bounded by the grant's time budget plus a grace), so TPOT =
decode + slot and nothing competes with the decode forward for the cores.

Start-up profile. While ``profiling`` is on, busy iterations alternate between
no slot and a *synthetic* slot whose size sweeps a fixed schedule, so both
predictor stages see the whole space before any customer job runs. When it
ends the predictor is persisted and the metric windows (polluted by synthetic
traffic) are reset.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time

from harli_sgl import env
from harli_sgl.config import HarliConfig
from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.iteration import NO_SLOT, IterationFeatures, SlotWork
from harli_sgl.core.message import (
    Heartbeat, ReclaimAck, SetFreeRun, SlotGrant, SlotReport, WorkerHello, WorkerState,
)
from harli_sgl.core.metrics import ColocationMetrics
from harli_sgl.core.policy.base import Grant, SlotContext, SlotPolicy
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.request_tracker import RequestTracker

logger = logging.getLogger(__name__)

# A slot may overrun its budget by this much before the scheduler stops waiting.
REPORT_GRACE_MS = 25.0
PROFILE_UNITS = (256, 512, 1024, 2048, 4096, 8192)
SAVE_EVERY_S = 60.0


class SlotCoordinator:
    def __init__(self, config: HarliConfig, policy: SlotPolicy, predictor: LatencyPredictor,
                 supervisor=None, predictor_path: str | None = None):
        self.config = config
        self.policy = policy
        self.predictor = predictor
        self.supervisor = supervisor
        self.predictor_path = predictor_path
        self.metrics = ColocationMetrics(config.tpot_slo_ms)
        self.tracker = RequestTracker(on_finished=self._on_request_finished)
        self.worker_state = WorkerState(has_work=False)
        self.profiling = False
        self._profile_sizes = itertools.cycle(PROFILE_UNITS)
        self._profile_turn = False
        self._slot_id = 0
        self._units_per_ms: float | None = None
        self._launch: tuple[float, IterationFeatures] | None = None
        self._work = NO_SLOT  # slot work run since the last launch
        self._overrun_in_interval = False
        self._last_save = time.monotonic()
        self._saved_samples = 0
        self.slots_overrun = 0
        trace = env.TRACE_ITERATIONS.get()
        self._trace = open(trace, "a", buffering=1) if trace else None
        self._load_predictor()
        self.lender = None  # a PoolLender once the unified pool is attached
        handlers: dict[type, object] = {WorkerState: self._on_state, SlotReport: self._on_report,
                                        ReclaimAck: self._on_reclaim_ack}
        if supervisor is not None:
            handlers[Heartbeat] = supervisor.on_heartbeat
            handlers[WorkerHello] = self._on_hello
            supervisor.on_death = self._on_worker_death
        self.dispatch = Dispatcher(handlers)  # type: ignore[arg-type]

    # -- scheduler hooks ---------------------------------------------------------------

    def on_launch(self, features: IterationFeatures, now: float) -> None:
        """A batch is being launched: close the previous iteration's measurement."""
        if self._launch is not None and not self.policy.free_run:
            t0, f0 = self._launch
            interval_ms = (now - t0) * 1000.0
            predicted = self.predictor.predict_corun(f0, self._work)
            if self._work.units:
                self.policy.observe_corun(predicted, interval_ms)
            if self._trace is not None:
                self._trace.write(json.dumps({
                    "t": now, "bs": f0.batch_size, "ctx": f0.context_tokens,
                    "ext": f0.extend_tokens, "fwd": self._work.units_fwd, "bwd": self._work.units_bwd,
                    "head": self._work.units_head, "interval_ms": interval_ms,
                    "predicted_ms": predicted, "profiling": self.profiling, "policy": self.policy.name,
                    "overrun": self._overrun_in_interval}) + "\n")
            self.predictor.observe(f0, interval_ms, self._work)
        self._launch = (now, features)
        self._work = NO_SLOT
        self._overrun_in_interval = False

    def on_tokens(self, updates: list[tuple[str, int, bool]], now: float) -> None:
        """(rid, output tokens so far, finished) for each request of the processed batch."""
        for rid, n_out, finished in updates:
            self.tracker.update(rid, n_out, now, finished)

    def after_iteration(self, next_iteration: IterationFeatures, running: int, waiting: int) -> None:
        self._pump()
        self._maybe_run_slot(next_iteration, running, waiting)

    def on_idle(self, waiting: int) -> None:
        # Nothing ran: the next launch starts a fresh measurement.
        self._launch = None
        self._pump()
        self._maybe_run_slot(IterationFeatures(0, 0), 0, waiting)

    def has_idle_work(self) -> bool:
        """True when an idle pass would run a slot (so the scheduler must not sleep)."""
        sup = self.supervisor
        return (sup is not None and sup.ready and self.worker_state.has_work
                and not self.policy.free_run and not self.profiling)

    def attach_pool(self, lender) -> None:
        self.lender = lender
        lender.worker_ready = self.supervisor is not None and self.supervisor.ready

    def maintain_pool(self, reserve_pages: int) -> None:
        """Lend or reclaim KV pages against serving's near-term demand (once per iteration)."""
        if self.lender is None or self.policy.name == "off":
            return
        page_bytes = self.lender.engine.page_bytes
        wanted = -(-self.worker_state.wanted_bytes // page_bytes) if self.worker_state.has_work else 0
        self.lender.maintain(reserve_pages, wanted)

    def wait_for(self, done, timeout_s: float) -> bool:
        """Dispatch the worker's messages until ``done()`` or the timeout (used by reclaims)."""
        sup = self.supervisor
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or sup is None:
                return done()
            sup.check()  # a dead worker's leases are released here
            msg = sup.inbox.recv(min(left, 0.05))
            if msg is not None:
                sup.note_alive()
                self.dispatch(msg)
        return True

    def set_profiling(self, on: bool) -> None:
        if on == self.profiling:
            return
        self.profiling = on
        if on:
            logger.info("harli: start-up latency profile begins")
            return
        self.predictor.profiled = True
        self.predictor.reset_errors()
        self.metrics.reset()
        self.save_predictor()
        logger.info("harli: start-up latency profile done: %s", json.dumps(self.predictor.status()))

    def set_policy(self, policy: SlotPolicy) -> None:
        old, self.policy = self.policy, policy
        if self.supervisor is not None and old.free_run != policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(policy.free_run))
        self._launch = None
        # Error windows and metric windows describe one policy at a time.
        self.predictor.reset_errors()
        self.metrics.reset()

    def shutdown(self) -> None:
        self.save_predictor()
        if self.supervisor is not None:
            self.supervisor.shutdown()

    # -- internals ---------------------------------------------------------------------

    def _pump(self) -> None:
        sup = self.supervisor
        if sup is not None:
            sup.check()
            while (msg := sup.inbox.recv(0.0)) is not None:
                sup.note_alive()
                self.dispatch(msg)
        now = time.monotonic()
        if now - self._last_save > SAVE_EVERY_S:
            self._last_save = now
            self.save_predictor()

    def _maybe_run_slot(self, nxt: IterationFeatures, running: int, waiting: int) -> None:
        sup = self.supervisor
        if sup is None or not sup.ready:
            return
        if self.profiling:
            self._profile_slot(running)
            return
        if not self.worker_state.has_work or self.policy.free_run:
            return
        slack = self.tracker.slack_ms(time.monotonic(), self.config.tpot_slo_ms) if running else None
        grant = self.policy.grant(SlotContext(
            next_iteration=nxt, running=running, waiting=waiting,
            worker_min_units=self.worker_state.min_piece_units,
            worker_units_per_ms=self._units_per_ms,
            next_pieces=self.worker_state.next_pieces, request_slack_ms=slack,
        ))
        if grant is not None and grant.budget_units >= max(1, self.worker_state.min_piece_units):
            self._run_slot(grant)

    def _profile_slot(self, running: int) -> None:
        if not running:
            return
        self._profile_turn = not self._profile_turn
        if self._profile_turn:  # every other busy iteration runs alone (stage 1 rows)
            self._run_slot(Grant(next(self._profile_sizes), 1000.0), synthetic=True)

    def _run_slot(self, grant: Grant, synthetic: bool = False) -> SlotReport | None:
        sup = self.supervisor
        self._slot_id += 1
        sent_at = time.perf_counter()
        sup.outbox.send(SlotGrant(self._slot_id, grant.budget_units, grant.budget_ms,
                                  grant.device_share, synthetic))
        deadline = sent_at + (grant.budget_ms + REPORT_GRACE_MS) / 1000.0
        while True:
            msg = sup.inbox.recv(max(0.0, deadline - time.perf_counter()))
            if msg is None:
                # Serving must not wait on a slow or dead worker; its report is
                # accounted for whenever it arrives.
                self.slots_overrun += 1
                self._overrun_in_interval = True
                return None
            sup.note_alive()
            self.dispatch(msg)
            if isinstance(msg, SlotReport) and msg.slot_id == self._slot_id:
                return msg

    def _load_predictor(self) -> None:
        path = self.predictor_path
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    self.predictor.load_state_dict(json.load(f)["predictor"])
                logger.info("harli: loaded the latency profile %s", path)
            except (OSError, ValueError, KeyError) as e:
                logger.warning("harli: ignoring unreadable latency profile %s: %s", path, e)

    def save_predictor(self) -> None:
        path = self.predictor_path
        samples = self.predictor.samples
        if not path or samples == self._saved_samples:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"predictor": self.predictor.state_dict()}, f)
        os.replace(tmp, path)
        self._saved_samples = samples

    # -- message handlers --------------------------------------------------------------

    def _on_hello(self, msg: WorkerHello) -> None:
        self.supervisor.on_hello(msg)
        self.worker_state = WorkerState(has_work=False)
        if self.lender is not None:
            self.lender.worker_ready = True
        if self.policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(True))

    def _on_state(self, msg: WorkerState) -> None:
        self.worker_state = msg

    def _on_report(self, msg: SlotReport) -> None:
        self.metrics.slot_ran(msg.units, msg.duration_ms, msg.trained_tokens)
        if msg.slot_id >= 0 and msg.units:  # free-run slices overlap decode; they are not slot work
            w = self._work
            self._work = SlotWork(w.units_fwd + msg.units - msg.units_bwd - msg.units_head,
                                  w.units_bwd + msg.units_bwd, w.units_head + msg.units_head,
                                  w.pieces + msg.pieces)
        if msg.units > 0 and msg.duration_ms > 0:
            rate = msg.units / msg.duration_ms
            self._units_per_ms = rate if self._units_per_ms is None else \
                0.8 * self._units_per_ms + 0.2 * rate

    def _on_reclaim_ack(self, msg: ReclaimAck) -> None:
        if self.lender is not None:
            self.lender.on_ack(msg)

    def _on_worker_death(self) -> None:
        self.worker_state = WorkerState(has_work=False)
        if self.lender is not None:
            self.lender.release_all()

    def _on_request_finished(self, tpot_ms: float) -> None:
        self.metrics.request_finished(tpot_ms)
        self.policy.observe_request(tpot_ms)

    def status(self) -> dict:
        worker = self.supervisor.status() if self.supervisor is not None else \
            {"alive": False, "pid": None, "restarts": 0}
        ws = self.worker_state
        work = {"has_work": ws.has_work, "job_id": ws.job_id,
                "max_piece_units": max((u for _, u in ws.next_pieces), default=0)}
        return {"worker": worker, "worker_work": work, "policy": self.policy.status(),
                "predictor": self.predictor.status(), "profiling": self.profiling,
                "pool": self.lender.status() if self.lender is not None else None,
                "slots_overrun": self.slots_overrun, **self.metrics.status()}
