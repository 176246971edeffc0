"""Per-iteration co-location logic: measure, predict, decide, run the slot.

The coordinator is the engine-agnostic half of the HarliScheduler. The SGLang
subclass reduces each batch to :class:`IterationFeatures` and calls:

* :meth:`on_launch` when a batch starts: the launch-to-launch interval that
  just ended is one measured iteration (its batch, the slot work that ran
  inside it, its duration) and feeds the latency predictor and the policy;
* :meth:`on_tokens` after results are processed: per-request token timing;
* :meth:`after_iteration` / :meth:`on_idle`: pump the worker's messages, let
  the supervisor detect deaths, ask the policy, and run the slot.

The policy answers each iteration with a :class:`Plan` in one of four
arrangements (see ``core/policy/base.py``). A *serial* slot is sent as a grant
and the scheduler blocks until the worker's report (bounded by the grant's time
budget plus a grace), so TPOT = decode + slot. *Concurrent* co-running is a
state, not a per-iteration message: ``CoRunStart`` once, then the worker trains
piece after piece on its share while the scheduler keeps decoding, until a plan
without co-running sends ``CoRunStop`` (waiting for the piece boundary only
when the plan says running beside the next iteration would break the SLO).
*Hybrid* adds a serial top-up to a co-running iteration.

Placement (CPU). The scheduler, not the worker, moves the worker's threads:
onto the worker's cores in SCHED_IDLE while co-running beside decode, onto
every core in the normal class for serial slots, and onto every core in
SCHED_IDLE while the server is idle. Doing it from here takes effect at once,
even in the middle of a piece, so a request arriving while the worker uses
every core finds decode's core free without waiting for a piece boundary.

Each closed iteration is classified by what actually ran in it (overlap from
the worker's piece timestamps, serial spans from the grants) and fed to the
matching predictor stage.

Start-up profile. While ``profiling`` is on, busy iterations rotate between no
slot, a *synthetic* serial slot whose size sweeps a fixed schedule, and (where
the device has a share for the worker) synthetic co-running, so every
predictor stage sees the space before any customer job runs. When it ends the
predictor is persisted and the metric windows (polluted by synthetic traffic)
are reset.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time

from harli_sgl import env
from harli_sgl.config import HarliConfig
from harli_sgl.core import placement
from harli_sgl.core.corun import CoRunTracker
from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.iteration import NO_SLOT, IterationFeatures
from harli_sgl.core.message import (
    CORUN_SLOT, CoRunStart, CoRunStop, CoRunStopped, FreeCompute, Heartbeat, ReclaimAck, SetFreeRun,
    SlotGrant, SlotReport, WorkerHello, WorkerState,
)
from harli_sgl.core.metrics import ColocationMetrics
from harli_sgl.core.policy.base import Arrangement, Grant, Plan, SlotContext, SlotPolicy
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.pool.ledger import PoolIntegrityError
from harli_sgl.core.pool.lender import EnginePages, PoolLender
from harli_sgl.core.worker_link import WorkerLink
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.predictor.profile_store import load_profile, save_profile
from harli_sgl.core.request_tracker import RequestTracker

logger = logging.getLogger(__name__)

# A slot may overrun its budget by this much before the scheduler stops waiting.
REPORT_GRACE_MS = 25.0
PROFILE_UNITS = (256, 512, 1024, 2048, 4096, 8192)
SAVE_EVERY_S = 60.0
POOL_CHECK_EVERY_S = 10.0
FREE_COMPUTE_EVERY_S = 2.0  # how often the worker learns this instance's free compute
# The idle speed (harvest's denominator, and placement's signal across a fleet) is
# averaged over about 20 pieces: one piece's speed varies widely on a host shared
# with another instance, enough to place a whole burst of jobs on one instance.
IDLE_RATE_ALPHA = 0.05
# An iteration with less of its decode time beside worker pieces than this ran alone.
MIN_OVERLAP = 0.02
# How long the scheduler waits for a co-run stop before the next iteration. A piece
# is ~10-30 ms on its own core, but the worker's SCHED_IDLE threads yield that core
# to SGLang's frontend, so a piece can stretch to hundreds of ms on a busy host:
# serving never waits longer than this, and what overlaps is measured as such.
STOP_WAIT_S = 0.02
# Recent co-run residuals above this fraction of the SLO keep the worker from co-running
# beside a batch that launches while it trains on the idle server.
CORUN_BIAS_LIMIT = 0.25


class SlotCoordinator:
    def __init__(self, config: HarliConfig, policy: SlotPolicy, predictor: LatencyPredictor,
                 supervisor: WorkerLink | None = None, predictor_path: str | None = None):
        self.config = config
        self.policy = policy
        self.predictor = predictor
        self.supervisor = supervisor
        self.predictor_path = predictor_path
        self.metrics = ColocationMetrics(config.tpot_slo_ms)
        self.tracker = RequestTracker(on_finished=self._on_request_finished)
        self.worker_state = WorkerState(has_work=False)
        self.profiling = False
        self.pool_integrity = "unchecked"
        self._last_pool_check = time.monotonic()
        self._profile_sizes = itertools.cycle(PROFILE_UNITS)
        self._profile_turn = 0
        self.corun = CoRunTracker()
        self._serial_spans: list[tuple[float, float]] = []
        self._paused_spans: list[tuple[float, float]] = []
        self._placement: tuple[tuple[int, ...], bool] | None = None
        # Harvest's denominator: the current job's units/ms on an idle server (every
        # core, no decode), measured whenever the server is idle; until then the
        # start-up profile's synthetic rate.
        self.idle_units_per_ms: float | None = None
        self.profile_units_per_ms: float | None = None
        self._slot_id = 0
        self._launch_wide = False
        self._units_per_ms: float | None = None
        # Finetune speed of hybrid top-ups (per ms decode was blocked) and of co-run
        # pieces on the worker's share: the harli policy tops up only where it pays.
        self.topup_units_per_ms: float | None = None
        self.corun_units_per_ms: float | None = None
        self._launch: tuple[float, IterationFeatures] | None = None
        self._work = NO_SLOT  # slot work run since the last launch
        self._overrun_in_interval = False
        self._last_save = time.monotonic()
        self._last_free_compute = 0.0
        self._saved_samples = 0
        self.slots_overrun = 0
        trace = env.TRACE_ITERATIONS.get()
        self._trace = open(trace, "a", buffering=1) if trace else None
        self._load_predictor()
        self.lender = None  # a PoolLender once the unified pool is attached
        handlers: dict[type, object] = {WorkerState: self._on_state, SlotReport: self._on_report,
                                        ReclaimAck: self._on_reclaim_ack,
                                        CoRunStopped: self._on_corun_stopped}
        if supervisor is not None:
            handlers[Heartbeat] = supervisor.on_heartbeat
            handlers[WorkerHello] = self._on_hello
            supervisor.on_death = self._on_worker_death
        self.dispatch = Dispatcher(handlers)  # type: ignore[arg-type]

    # -- scheduler hooks ---------------------------------------------------------------

    def decode_on_every_cpu(self) -> bool:
        """Whether decode runs on every core now: a split host with no finetune work here.

        The split gives decode its own cores so that the worker can train beside it.
        With no job there is nothing to harvest, and confining decode to its cores
        cost serving 1.35-1.57x TPOT p50 against stock SGLang in
        ``benchmark/overhead.py`` (2026-12-01, 8 concurrent requests, whose prefills
        use the second core). The start-up profile keeps the split: it measures decode
        as it runs beside a job.
        """
        cfg = self.config
        return bool(cfg.decode_cpus and cfg.worker_cpus) and self.supervisor is not None \
            and not self.profiling and not self.worker_state.has_work

    def on_launch(self, features: IterationFeatures, now: float, wide: bool = False) -> None:
        """A batch is being launched: close the previous iteration's measurement.

        ``wide``: this batch runs on every core (see :meth:`decode_on_every_cpu`); stage 1
        does not learn from it, since its law is decode on decode's own cores."""
        if self.corun.active and self.corun.share >= 1.0 and self.config.worker_cpus:
            # The worker was using every core on the idle server. Move it off decode's
            # cores before this batch runs: pinning from here takes effect at once,
            # mid-piece (measured: leaving a SCHED_IDLE trainer thread on decode's
            # core slowed the next iterations 2-5x). If co-running on its share was just
            # measured far slower than modelled, stop instead.
            if self.predictor.concurrent_bias(self.corun_share) > \
                    CORUN_BIAS_LIMIT * self.config.tpot_slo_ms:
                self._place(self.config.worker_cpus, idle_class=True)
                self._stop_corun(wait=False)
            else:
                self._start_corun(self.corun_share)
        self._drain()  # piece reports up to now: the overlap below needs them
        if self._launch is not None and not self.policy.free_run:
            self._close_iteration(*self._launch, now)
        self._launch = (now, features)
        self._launch_wide = wide
        self._work = NO_SLOT
        self._serial_spans = []
        self._paused_spans = []
        self._overrun_in_interval = False

    def _close_iteration(self, t0: float, f0: IterationFeatures, now: float) -> None:
        paused_ms = sum(e - s for s, e in self._paused_spans) * 1000.0
        interval_ms = (now - t0) * 1000.0 - paused_ms
        work = self._work
        running_now = self.corun.synthetic or self.worker_state.has_work
        overlap = self.corun.overlap(t0, now, self._serial_spans + self._paused_spans, running_now)
        p = self.predictor
        if overlap.total >= MIN_OVERLAP:
            arrangement = Arrangement.HYBRID if work.units else Arrangement.CONCURRENT
            serial_ms = sum(e - s for s, e in self._serial_spans) * 1000.0
            predicted = p.predict_decode(f0) + p.interference(f0, overlap.share, overlap) + \
                p.slot_cost(work)
            if not self.profiling and not self._overrun_in_interval:
                # The margin tracks live prediction error; an overrun is the worker's
                # fault, repaid through the request deadlines, not the model's error.
                self.policy.observe_corun(predicted, interval_ms)
            p.observe_concurrent(f0, interval_ms - serial_ms, overlap, serial=work,
                                 interval_ms=interval_ms)
        else:
            arrangement = Arrangement.SERIAL if work.units else Arrangement.NONE
            predicted = p.predict_corun(f0, work)
            if work.units and not self.profiling:
                self.policy.observe_corun(predicted, interval_ms)
            if not self._launch_wide:
                p.observe(f0, interval_ms, work)
        if not self.profiling:
            self.corun.account(arrangement.value, interval_ms)
            self.metrics.decode_ran(interval_ms - sum(e - s for s, e in self._serial_spans) * 1000.0)
        if self._trace is not None:
            self._trace.write(json.dumps({
                "t0": t0, "t": now, "bs": f0.batch_size, "ctx": f0.context_tokens, "ext": f0.extend_tokens,
                "arrangement": arrangement.value, "fwd": work.units_fwd, "bwd": work.units_bwd,
                "head": work.units_head, "overlap": round(overlap.total, 4), "share": overlap.share,
                "serial_ms": sum(e - s for s, e in self._serial_spans) * 1000.0,
                "interval_ms": interval_ms, "predicted_ms": predicted, "profiling": self.profiling,
                "policy": self.policy.name, "overrun": self._overrun_in_interval,
                "wide": self._launch_wide}) + "\n")

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
        """True when an idle pass would run a serial slot (so the scheduler must not sleep).

        A worker co-running on the idle server needs no idle passes: the scheduler
        sleeps in SGLang's idle sleeper, and a request (or the worker) wakes it.
        """
        sup = self.supervisor
        return (sup is not None and sup.ready and self.worker_state.has_work
                and not self.policy.free_run and not self.profiling and not self.corun.active)

    def attach_pool(self, pages: EnginePages) -> PoolLender:
        """Lend the engine's free KV pages to the worker: the one place a lender is built.

        The engine's allocator must ask the returned lender before it evicts (the
        SGLang hook does, see harli_sgl/sglang/pool.py).
        """
        assert self.supervisor is not None, "the pool is lent to a worker"
        sup = self.supervisor
        self.lender = PoolLender(pages, send=sup.outbox.send, wait=self.wait_for,
                                 kill_worker=sup.kill_now)
        self.lender.worker_ready = sup.ready
        self._last_pool_check = time.monotonic()
        return self.lender

    def maintain_pool(self, reserve_pages: int) -> None:
        """Lend or reclaim KV pages against serving's near-term demand (once per iteration),
        and check the ledger against the engine every ``POOL_CHECK_EVERY_S``."""
        if self.lender is None:
            return
        if self.policy.name != "off":
            page_bytes = self.lender.engine.page_bytes
            wanted = -(-self.worker_state.wanted_bytes // page_bytes) if self.worker_state.has_work else 0
            self.lender.maintain(reserve_pages, wanted)
        now = time.monotonic()
        if now - self._last_pool_check > POOL_CHECK_EVERY_S:
            self._last_pool_check = now
            try:
                self.lender.check_integrity()
                self.pool_integrity = "ok"
            except PoolIntegrityError as e:
                # Reported loudly, never fatal: serving must outlive a bookkeeping bug.
                logger.error("harli: unified pool integrity check failed: %s", e)
                self.pool_integrity = str(e)

    def wait_for(self, done, timeout_s: float) -> bool:
        """Dispatch the worker's messages until ``done()`` or the timeout (used by reclaims)."""
        sup = self.supervisor
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or sup is None:
                return done()
            msg = sup.inbox.recv(min(left, 0.05))
            if msg is not None:
                sup.note_alive()
                self.dispatch(msg)
            else:
                sup.check()  # a dead worker's leases are released here
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
        st = self.predictor.status()
        # One readable line; the weights are in /harli/status?debug=1 and the saved profile.
        logger.info("harli: start-up latency profile done: %s", ", ".join(
            f"{stage} {st[stage]['samples']} samples, MAPE "
            + (f"{100 * st[stage]['mape']:.0f}%" if st[stage].get("mape") is not None else "n/a")
            for stage in ("stage1", "stage2") if stage in st))

    def set_policy(self, policy: SlotPolicy) -> None:
        old, self.policy = self.policy, policy
        if self.corun.active:
            self._stop_corun(wait=True)
        if self.supervisor is not None and old.free_run != policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(policy.free_run))
            # Greedy is uncoordinated co-location: the worker keeps the placement it was
            # spawned with (every core, normal class), as a naive deployment would.
            self._place(self.config.all_cpus, idle_class=False)
        self._launch = None
        # Error windows and metric windows describe one policy at a time.
        self.predictor.reset_errors()
        self.metrics.reset()
        self.corun.reset()

    def shutdown(self) -> None:
        self.save_predictor()
        if self.supervisor is not None:
            self.supervisor.shutdown()

    # -- internals ---------------------------------------------------------------------

    def _drain(self) -> None:
        sup = self.supervisor
        if sup is None:
            return
        while (msg := sup.inbox.recv(0.0)) is not None:
            sup.note_alive()
            self.dispatch(msg)

    def _pump(self) -> None:
        sup = self.supervisor
        if sup is not None:
            # Read what the worker already sent *before* judging its silence: after a
            # long iteration its heartbeats are queued here, not missing.
            self._drain()
            sup.check()
        now = time.monotonic()
        if sup is not None and sup.ready and now - self._last_free_compute >= FREE_COMPUTE_EVERY_S:
            self._last_free_compute = now
            sup.outbox.send(FreeCompute(self.free_units_per_s()))
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
        if self.policy.free_run:
            return
        if not self.worker_state.has_work:
            if self.corun.active:
                self._stop_corun(wait=False)
            return
        slack = self.tracker.slack_ms(time.monotonic(), self.config.tpot_slo_ms) if running else None
        plan = self.policy.plan(SlotContext(
            next_iteration=nxt, running=running, waiting=waiting,
            worker_min_units=self.worker_state.min_piece_units,
            worker_units_per_ms=self._units_per_ms,
            next_pieces=self.worker_state.next_pieces, request_slack_ms=slack,
            corun_share=self.corun_share, corun_active=self.corun.active,
            topup_units_per_ms=self.topup_units_per_ms, corun_units_per_ms=self.corun_units_per_ms,
        ))
        self._apply(plan)

    @property
    def corun_share(self) -> float:
        """The worker's share of the device for co-running beside decode (0: serial only)."""
        cfg = self.config
        if cfg.device == "cpu" and cfg.worker_cpus:
            return len(cfg.worker_cpus) / max(1, len(cfg.all_cpus))
        if cfg.device == "cuda":  # an MPS share fixed when the worker starts (untested)
            return cfg.gpu_worker_share
        return 0.0

    def _apply(self, plan: Plan) -> None:
        if plan.concurrent:
            self._start_corun(plan.share)
        elif self.corun.active:
            self._stop_corun(wait=plan.stop_wait)
        grant = plan.serial
        if grant is not None and grant.budget_units >= max(1, self.worker_state.min_piece_units):
            self._run_slot(grant)

    def _corun_cpus(self, share: float) -> tuple[int, ...]:
        return self.config.all_cpus if share >= 1.0 else self.config.worker_cpus

    def _start_corun(self, share: float, synthetic: bool = False) -> None:
        cpus = self._corun_cpus(share)
        self._place(cpus, idle_class=True)
        if self.corun.active and self.corun.cpus == cpus and self.corun.synthetic == synthetic:
            return
        self.supervisor.outbox.send(CoRunStart(share, cpus, synthetic))
        self.corun.started(share, cpus, time.monotonic(), synthetic)

    def _stop_corun(self, wait: bool) -> None:
        seq = self.corun.stop_requested(time.monotonic())
        self.supervisor.outbox.send(CoRunStop(seq))
        if wait:
            started = time.monotonic()
            self.wait_for(lambda: self.corun.stopping is None, STOP_WAIT_S)
            # Not decode time: excluded from the iteration's decode like a serial slot.
            self._paused_spans.append((started, time.monotonic()))

    def _place(self, cpus: tuple[int, ...], idle_class: bool) -> None:
        """Move the worker's threads (CPU hosts with a split; a no-op elsewhere)."""
        sup = self.supervisor
        if not cpus or self.config.device != "cpu" or sup is None or sup.pid is None:
            return
        if self._placement == (cpus, idle_class):
            return
        keep = (sup.hello.liveness_tid,) if sup.hello is not None and sup.hello.liveness_tid else ()
        placement.pin_threads(cpus, sup.pid)
        placement.set_idle_class(idle_class, sup.pid, skip=keep)
        self._placement = (cpus, idle_class)

    def _profile_slot(self, running: int) -> None:
        if not running:
            return
        phases = 3 if self.corun_share > 0 else 2
        self._profile_turn = (self._profile_turn + 1) % phases
        if self._profile_turn == 0:  # runs alone: stage 1 rows
            if self.corun.active:
                self._stop_corun(wait=True)
        elif self._profile_turn == 1:
            if self.corun.active:
                self._stop_corun(wait=True)
            self._run_slot(Grant(next(self._profile_sizes), 1000.0), synthetic=True)
        else:
            self._start_corun(self.corun_share, synthetic=True)

    def _run_slot(self, grant: Grant, synthetic: bool = False) -> SlotReport | None:
        sup = self.supervisor
        self._slot_id += 1
        co_running = self.corun.active
        self._place(self.config.all_cpus, idle_class=False)
        sent_at = time.perf_counter()
        started = time.monotonic()
        sup.outbox.send(SlotGrant(self._slot_id, grant.budget_units, grant.budget_ms,
                                  grant.device_share, synthetic,
                                  deadline=started + grant.budget_ms / 1000.0))
        deadline = sent_at + (grant.budget_ms + REPORT_GRACE_MS) / 1000.0
        report = None
        while True:
            msg = sup.inbox.recv(max(0.0, deadline - time.perf_counter()))
            if msg is None:
                # Serving must not wait on a slow or dead worker; its report is
                # accounted for whenever it arrives.
                self.slots_overrun += 1
                self._overrun_in_interval = True
                break
            sup.note_alive()
            self.dispatch(msg)
            if isinstance(msg, SlotReport) and msg.slot_id == self._slot_id:
                report = msg
                break
        ended = time.monotonic()
        self._serial_spans.append((started, ended))
        if co_running and not synthetic and report is not None and report.units and ended > started:
            self.topup_units_per_ms = _ema(self.topup_units_per_ms,
                                           report.units / ((ended - started) * 1000.0))
        if co_running and self.corun.active:  # hybrid: back to the worker's share
            self._place(self.corun.cpus, idle_class=True)
        return report

    def _load_predictor(self) -> None:
        saved = load_profile(self.predictor_path)
        if saved is None:
            return
        try:
            self.predictor.load_state_dict(saved["predictor"])
        except (ValueError, KeyError) as e:
            logger.warning("harli: ignoring unreadable latency profile %s: %s", self.predictor_path, e)
            return
        self.profile_units_per_ms = saved.get("idle_units_per_ms")
        logger.info("harli: loaded the latency profile %s", self.predictor_path)

    def save_predictor(self) -> None:
        samples = self.predictor.samples
        if not self.predictor_path or samples == self._saved_samples:
            return
        save_profile(self.predictor_path, self.predictor.state_dict(), self.profile_units_per_ms)
        self._saved_samples = samples

    # -- message handlers --------------------------------------------------------------

    def _on_hello(self, msg: WorkerHello) -> None:
        self.supervisor.on_hello(msg)
        self.worker_state = WorkerState(has_work=False)
        self.corun.worker_gone()
        self._placement = None
        # A new worker inherits the spawning thread's cores (decode's): give it every core.
        self._place(self.config.all_cpus, idle_class=False)
        if self.lender is not None:
            self.lender.worker_ready = True
        if self.policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(True))

    def _on_state(self, msg: WorkerState) -> None:
        self.worker_state = msg

    def _on_report(self, msg: SlotReport) -> None:
        if msg.slot_id == CORUN_SLOT:
            self._on_corun_piece(msg)
            return
        self.metrics.slot_ran(msg.units, msg.duration_ms, msg.trained_tokens)
        if msg.slot_id >= 0 and msg.units:  # free-run slices overlap decode; they are not slot work
            self._work = self._work + msg.work
        if msg.units > 0 and msg.duration_ms > 0:
            rate = msg.units / msg.duration_ms
            self._units_per_ms = rate if self._units_per_ms is None else \
                0.8 * self._units_per_ms + 0.2 * rate
            if self.profiling and msg.slot_id >= 0:
                self.profile_units_per_ms = _ema(self.profile_units_per_ms, rate)
            elif msg.slot_id >= 0 and self._launch is None:  # a serial slot on the idle server
                self.idle_units_per_ms = _ema(self.idle_units_per_ms, rate, IDLE_RATE_ALPHA)

    def _on_corun_piece(self, msg: SlotReport) -> None:
        self.corun.on_piece(msg.started_at, msg.ended_at, msg.work, msg.trained_tokens)
        if self._trace is not None:
            self._trace.write(json.dumps({
                "piece": True, "start": msg.started_at, "end": msg.ended_at, "units": msg.units,
                "job_id": msg.job_id, "share": self.corun.share}) + "\n")
        if msg.job_id is None:  # synthetic (start-up profile): not finetune work
            return
        self.metrics.corun_ran(msg.units, msg.trained_tokens)
        if msg.units > 0 and msg.duration_ms > 0 and 0.0 < self.corun.share < 1.0:
            self.corun_units_per_ms = _ema(self.corun_units_per_ms, msg.units / msg.duration_ms)
        if msg.units > 0 and msg.duration_ms > 0 and self._launch is None \
                and self.corun.active and self.corun.share >= 1.0:
            # A piece on every core while nothing decodes: the idle server's speed.
            self.idle_units_per_ms = _ema(self.idle_units_per_ms, msg.units / msg.duration_ms,
                                          IDLE_RATE_ALPHA)

    def _on_corun_stopped(self, msg: CoRunStopped) -> None:
        self.corun.stopped(msg.seq, msg.stopped_at)

    def _on_reclaim_ack(self, msg: ReclaimAck) -> None:
        if self.lender is not None:
            self.lender.on_ack(msg)

    def _on_worker_death(self) -> None:
        self.worker_state = WorkerState(has_work=False)
        self.corun.worker_gone()
        self._placement = None
        if self.lender is not None:
            self.lender.release_all()

    def _on_request_finished(self, tpot_ms: float) -> None:
        self.metrics.request_finished(tpot_ms)
        self.policy.observe_request(tpot_ms)

    CONTROLS = ("profile", "mode", "static_slot_units", "prefill_cpus")

    def control(self, knobs: dict) -> bool:
        """Operator controls, validated here once: ``profile`` (bool), ``mode`` (one of
        MODES, by name), ``static_slot_units`` (int >= 0) and ``prefill_cpus`` (decode or
        all). All or nothing."""
        if not knobs or not set(knobs) <= set(self.CONTROLS):
            logger.warning("harli: unknown controls %s", sorted(set(knobs) - set(self.CONTROLS)))
            return False
        changes = {k: knobs[k] for k in ("mode", "static_slot_units", "prefill_cpus") if k in knobs}
        if changes:
            try:
                config = dataclasses.replace(self.config, **changes)
            except (TypeError, ValueError) as e:
                logger.warning("harli: rejected controls %s: %s", knobs, e)
                return False
            if config.finetune_enabled and self.supervisor is None:
                logger.warning("harli: this server was started without a finetune worker")
                return False
        if "profile" in knobs:
            self.set_profiling(bool(knobs["profile"]))
        if changes:
            self.config = config
            self.set_policy(make_policy(config, self.predictor))
            logger.info("harli: policy now %s (static_slot_units=%d)", config.mode,
                        config.static_slot_units)
        return True

    def report(self) -> dict:
        """The scheduler's part of ``/harli/status`` (the main process adds ``jobs``)."""
        cfg, core = self.config, self.status()
        return {
            "mode": cfg.mode,
            "tpot_slo_ms": cfg.tpot_slo_ms,
            "static_slot_units": cfg.static_slot_units,
            "prefill_cpus": cfg.prefill_cpus,
            "worker": {**core["worker"], **core["worker_work"]},
            "jobs": None,
            "finetune_tokens_per_s": core["finetune_tokens_per_s"],
            "slo_attainment": core["slo_attainment"],
            "tpot_ms": core["tpot_ms"],
            "slots": {**core["slots"], "overrun": core["slots_overrun"]},
            "arrangement": core["arrangement"],
            "requests_in_flight": core["requests_in_flight"],
            "harvest": core["harvest"],
            "totals": core["totals"],
            "window_s": core["window_s"],
            "policy": core["policy"],
            "predictor": core["predictor"],
            "profiling": core["profiling"],
            "pool": None if core["pool"] is None else {**core["pool"], "integrity": self.pool_integrity},
        }

    def free_units_per_s(self) -> float | None:
        """The compute a new job could get here: the idle speed times the share of time
        decode leaves free over the last minute (None until a speed is known).

        A ranking signal for placing jobs across a fleet, not a promise: co-running also
        harvests compute while decode runs, which this leaves out on every instance alike.
        """
        idle_rate = self.idle_units_per_ms or self.profile_units_per_ms
        if not idle_rate:
            return None
        return idle_rate * 1000.0 * (1.0 - self.metrics.decode_busy_fraction())

    def status(self) -> dict:
        worker = self.supervisor.status() if self.supervisor is not None else \
            {"alive": False, "pid": None, "restarts": 0}
        ws = self.worker_state
        work = {"has_work": ws.has_work, "job_id": ws.job_id,
                "max_piece_units": max((u for _, u in ws.next_pieces), default=0)}
        idle_rate = self.idle_units_per_ms or self.profile_units_per_ms
        units_per_s = self.metrics.units_per_s()
        harvest = units_per_s / (idle_rate * 1000.0) if idle_rate else None
        return {"worker": worker, "worker_work": work, "policy": self.policy.status(),
                "predictor": self.predictor.status(), "profiling": self.profiling,
                "pool": self.lender.status() if self.lender is not None else None,
                "slots_overrun": self.slots_overrun,
                "requests_in_flight": len(self.tracker),
                "arrangement": {**self.corun.status(), "available_share": self.corun_share,
                                "decode_cpus": list(self.config.decode_cpus),
                                "worker_cpus": list(self.config.worker_cpus),
                                # Units per ms: a hybrid top-up per ms decode waited for it,
                                # and co-run pieces on the worker's share (harli tops up
                                # only where the first beats the second).
                                "topup_units_per_ms": self.topup_units_per_ms,
                                "corun_units_per_ms": self.corun_units_per_ms},
                "harvest": {"value": harvest, "units_per_s": units_per_s,
                            "free_units_per_s": self.free_units_per_s(),
                            "decode_busy_fraction": self.metrics.decode_busy_fraction(),
                            "idle_units_per_s": idle_rate * 1000.0 if idle_rate else None,
                            "idle_source": "measured_idle" if self.idle_units_per_ms else
                            "startup_profile" if self.profile_units_per_ms else None},
                **self.metrics.status()}


def _ema(old: float | None, value: float, alpha: float = 0.2) -> float:
    return value if old is None else (1 - alpha) * old + alpha * value
