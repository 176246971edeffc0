"""SlotCoordinator: wires the parts and answers the scheduler's hooks.

The SGLang subclass reduces each batch to :class:`IterationFeatures` and calls
:meth:`~SlotCoordinator.on_launch` when a batch starts (closing the measured
iteration, ``measure.py``), :meth:`~SlotCoordinator.on_tokens` after results
are processed, and :meth:`~SlotCoordinator.after_iteration` /
:meth:`~SlotCoordinator.on_idle` to pump the worker's messages, ask the policy
and apply its :class:`Plan` (serial slots and co-running: ``corun_control.py``).
This module holds only that turn, the message handlers and the wiring.

It stays whole at about 380 lines: the turn and the handlers share the
coordinator's state, and each concern with state of its own (measurement, the
channel, co-run control, speeds, status) is already its own module here.
"""

from __future__ import annotations

import logging
import time

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import controls
from harli_sgl.core.coordinator import status as status_view
from harli_sgl.core.coordinator.channel import WorkerChannel
from harli_sgl.core.coordinator.corun_control import CoRunControl
from harli_sgl.core.coordinator.measure import IterationMeter
from harli_sgl.core.coordinator.speeds import FinetuneSpeeds
from harli_sgl.core.predictor import slo_reach
from harli_sgl.core.coordinator.startup_profile import StartupProfile
from harli_sgl.core.corun import CoRunTracker
from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.gpu import overlap
from harli_sgl.core.gpu.corun_means import MeansChoice
from harli_sgl.core.gpu.fence import Device
from harli_sgl.core.iteration import IterationFeatures
from harli_sgl.core.message.from_worker import (
    CORUN_SLOT, CoRunStopped, FromWorker, Heartbeat, ReclaimAck, SlotReport, WorkerHello,
    WorkerState,
)
from harli_sgl.core.message.to_worker import FreeCompute, SetFreeRun
from harli_sgl.core.metrics import ColocationMetrics
from harli_sgl.core.policy.base import Plan, SlotContext, SlotPolicy
from harli_sgl.core.pool.lender import EnginePages, PoolLender
from harli_sgl.core.pool.manager import PoolManager, ServingDemand
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.request_tracker import RequestTracker
from harli_sgl.core.worker_link import WorkerLink

logger = logging.getLogger(__name__)

FREE_COMPUTE_EVERY_S = 2.0  # how often the worker learns this instance's free compute


class SlotCoordinator:
    def __init__(self, config: HarliConfig, policy: SlotPolicy, predictor: LatencyPredictor,
                 supervisor: WorkerLink | None = None, predictor_path: str | None = None,
                 means: MeansChoice | None = None, sm_count: int = 0):
        self.config = config
        self.policy = policy
        self.predictor = predictor
        self.supervisor = supervisor
        self.metrics = ColocationMetrics(config.tpot_slo_ms)
        self.tracker = RequestTracker(on_finished=self._on_request_finished)
        self.worker_state = WorkerState(has_work=False)
        self.corun = CoRunTracker()
        self.meter = IterationMeter(predictor, self.corun, self.metrics)
        self.profile = StartupProfile(predictor, predictor_path)
        self.speeds = FinetuneSpeeds(profile_units_per_ms=self.profile.load())
        self.dispatch: Dispatcher[FromWorker] = Dispatcher(self._handlers())
        self.channel = WorkerChannel(supervisor, self.dispatch)
        self.corun_control = CoRunControl(config, supervisor, self.channel, self.meter, self.corun,
                                          self.speeds, means, sm_count)
        self.pool: PoolManager | None = None  # once the unified pool is attached
        self._last_free_compute = 0.0
        self._next_alone = False  # the last plan leaves the next iteration to decode alone
        if supervisor is not None:
            supervisor.on_death = self._on_worker_death
        self.warn_if_slo_unreachable()  # a reused profile knows this host already

    def _handlers(self) -> dict:
        handlers: dict[type, object] = {WorkerState: self._on_state, SlotReport: self._on_report,
                                        ReclaimAck: self._on_reclaim_ack,
                                        CoRunStopped: self._on_corun_stopped}
        if self.supervisor is not None:
            handlers[Heartbeat] = self.supervisor.on_heartbeat
            handlers[WorkerHello] = self._on_hello
        return handlers

    @property
    def profiling(self) -> bool:
        return self.profile.on

    @property
    def corun_share(self) -> float:
        """The worker's share of the device for co-running beside decode (0: serial only)."""
        return self.corun_control.share

    # -- scheduler hooks ---------------------------------------------------------------

    def decode_on_every_cpu(self) -> bool:
        """Whether decode runs on every core now: a split host where nothing trains beside it.

        The split gives decode its own cores so that the worker can train beside it.
        With no job there is nothing to harvest, and confining decode to its cores
        cost serving 1.35-1.57x TPOT p50 against stock SGLang in
        ``benchmark/overhead.py`` (2026-12-01, 8 concurrent requests, whose prefills
        use the second core). The same holds with a job under a policy that never
        trains beside decode (``off``, ``idle``, ``static``, ``harli-serial``: serial
        slots run while the scheduler waits): in the 2026-12-02 co-location run,
        ``off`` with a job and decode on one core missed the SLO at 0.5 req/s where
        stock holds it. The start-up profile keeps the split: it measures decode as it
        runs beside a job.

        The same holds for one iteration of a policy that does train beside decode, when
        its plan leaves the iteration alone (co-running would break the SLO, or the slack
        is below one piece): the worker then waits, and decode confined to its core while
        the worker's core idled paid the split for nothing. In the 2026-12-02 co-location
        run, on a slow stretch of the host, ``harli`` spent 90% of serving time so, with
        attainment at or below ``off``'s. Calibration iterations stay on decode's cores:
        they measure it there.

        ``--harli-widen-decode never`` turns all of this off: where instances share a
        host's cores (the fleet benchmark crosses two splits, 0/1 and 1/0, on 2 cores),
        "every core" includes another instance's decode core, and widening onto it took
        SmolLM2's TPOT p50 to 2.5 s at 0.25 req/s per instance.
        """
        return self._may_widen() and (not self.worker_state.has_work
                                      or not self.policy.beside_decode or self._next_alone)

    def prefill_on_every_cpu(self) -> bool:
        """Whether a prefill (extend) batch runs on every core: ``--harli-prefill-cpus all``
        (the default) on a split host, unless the policy is a fixed partition (``spatial``:
        what a static split does, the baseline) or ``--harli-widen-decode never`` forbids
        every widening (instances sharing a host's cores).

        A prefill is compute-bound and, on SmolLM2, long: in a burst of ten 128-token
        prompts on the 2-core host (2026-12-02, same server, same prompts) the extend
        batch took 1.44-1.49 s on both cores and 2.18-2.44 s on decode's core with the
        worker beside it. That iteration is the whole of a new request's TTFT and part of
        every running request's TPOT. The worker's threads are SCHED_IDLE, so they yield
        the core to the prefill at once and lose only the prefill's duration.
        """
        return self.config.prefill_cpus == "all" and self._may_widen() \
            and not self.policy.fixed_partition

    def _may_widen(self) -> bool:
        """Any widening at all: a split host with a worker, widening allowed, and not the
        start-up profile (it measures the split as it is)."""
        cfg = self.config
        return cfg.widen_decode == "auto" and bool(cfg.decode_cpus and cfg.worker_cpus) \
            and self.supervisor is not None and not self.profiling

    def launch_on_every_cpu(self, extend: bool) -> bool:
        """Whether the batch about to launch runs on every core (decode widened, or a prefill)."""
        return self.decode_on_every_cpu() or (extend and self.prefill_on_every_cpu())

    def on_launch(self, features: IterationFeatures, now: float, wide: bool = False) -> None:
        """A batch is being launched: close the previous iteration's measurement.

        ``wide``: this batch runs on every core (see :meth:`launch_on_every_cpu`); stage 1
        learns it through its placement term (``core/predictor/two_stage.py``)."""
        self.corun_control.before_launch(self.policy)
        self.channel.drain()  # piece reports up to now: the overlap needs them
        if not self.policy.free_run:
            closed = self.meter.close(now, self.policy, self.profiling, self.worker_state.has_work)
            # The profile's synthetic work is no job's; free-run policies are unmeasured
            # (none of them adapts to finished requests).
            if closed is not None and closed.work_ms > 0 and not self.profiling:
                self.tracker.note_work(closed.work_ms)
        self.meter.begin(features, now, wide)

    def on_tokens(self, updates: list[tuple[str, int, bool]], now: float) -> None:
        """(rid, output tokens so far, finished) for each request of the processed batch."""
        for rid, n_out, finished in updates:
            self.tracker.update(rid, n_out, now, finished)

    def after_iteration(self, next_iteration: IterationFeatures, running: int, waiting: int) -> None:
        self._pump()
        self._maybe_run_slot(next_iteration, running, waiting)

    def on_idle(self, waiting: int) -> None:
        self.meter.forget()  # nothing ran: the next launch starts a fresh measurement
        self._pump()
        self._maybe_run_slot(IterationFeatures(0, 0), 0, waiting)

    def drain_before_launch(self, overlap_loop: bool) -> bool:
        """Under SGLang's overlap loop: process the last batch (and run its slot) before
        the next launch, so a serial slot runs with the GPU idle (``core/gpu/overlap.py``)."""
        sup = self.supervisor
        return overlap.drain_before_launch(
            overlap_loop, sup is not None and sup.ready, self.worker_state.has_work,
            self.policy.free_run, self.profiling, gpu=self.config.device == "cuda")

    def has_idle_work(self) -> bool:
        """True when an idle pass would run a serial slot (so the scheduler must not sleep).

        A worker co-running on the idle server needs no idle passes: the scheduler
        sleeps in SGLang's idle sleeper, and a request (or the worker) wakes it.
        """
        sup = self.supervisor
        return (sup is not None and sup.ready and self.worker_state.has_work
                and not self.policy.free_run and not self.profiling and not self.corun.active)

    def attach_pool(self, pages: EnginePages, device: Device | None = None) -> PoolLender:
        """Lend the engine's free KV pages to the worker: the one place a pool is attached.

        The engine's allocator must ask the returned lender before it evicts (the
        SGLang hook does, see harli_sgl/sglang/pool.py).
        """
        assert self.supervisor is not None, "the pool is lent to a worker"
        self.pool = PoolManager(pages, self.supervisor, wait=self.channel.wait_for, device=device)
        return self.pool.lender

    def maintain_pool(self, demand: ServingDemand) -> None:
        """Once per iteration: lend or reclaim KV pages against serving's near-term demand."""
        if self.pool is not None:
            self.pool.maintain(demand, self.worker_state, lend=self.policy.lends_pool)

    def wait_for(self, done, timeout_s: float) -> bool:
        return self.channel.wait_for(done, timeout_s)

    def set_profiling(self, on: bool) -> None:
        if on == self.profiling:
            return
        if on:
            self.profile.on = True
            logger.info("harli: start-up latency profile begins")
            return
        self.metrics.reset()
        self.profile.finish(self.speeds.profile_units_per_ms)
        self.warn_if_slo_unreachable()

    def warn_if_slo_unreachable(self) -> None:
        """Log when decode alone is predicted above the SLO at a measured batch size."""
        over = slo_reach.first_batch_over(self.predictor, self.config.tpot_slo_ms)
        if over is not None:
            logger.warning(
                "harli: the TPOT SLO (%.0f ms) is below decode alone on this host from batch "
                "%d (predicted %.0f ms): no policy can hold it there. Measure stock SGLang "
                "(benchmark/stock_tpot.py) and set --tpot-slo-ms from it.",
                self.config.tpot_slo_ms, over[0], over[1])

    def set_policy(self, policy: SlotPolicy) -> None:
        old, self.policy = self.policy, policy
        if self.corun.active:
            self.corun_control.stop(wait=True)
        if self.supervisor is not None and old.free_run != policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(policy.free_run))
            # Greedy is uncoordinated co-location: the worker keeps the CPU affinity it was
            # spawned with (every core, normal class), as a naive deployment would.
            self.corun_control.place_everywhere()
        self.meter.forget()
        # Error windows and metric windows describe one policy at a time.
        self.predictor.reset_errors()
        self.metrics.reset()
        self.corun.reset()

    def save_predictor(self) -> None:
        self.profile.save(self.speeds.profile_units_per_ms)

    def shutdown(self) -> None:
        self.save_predictor()
        if self.supervisor is not None:
            self.supervisor.shutdown()

    # -- one iteration's turn ----------------------------------------------------------

    def _pump(self) -> None:
        self.channel.pump()
        sup = self.supervisor
        now = time.monotonic()
        if sup is not None and sup.ready and now - self._last_free_compute >= FREE_COMPUTE_EVERY_S:
            self._last_free_compute = now
            sup.outbox.send(FreeCompute(status_view.free_units_per_s(self.speeds, self.metrics)))
        self.profile.save_due(now, self.speeds.profile_units_per_ms)

    def _maybe_run_slot(self, nxt: IterationFeatures, running: int, waiting: int) -> None:
        self._next_alone = False
        sup = self.supervisor
        if sup is None or not sup.ready:
            return
        if self.profiling:
            self.profile.run_turn(running, self.corun_control)
            return
        if self.policy.free_run:
            return
        if not self.worker_state.has_work:
            if self.corun.active:
                self.corun_control.stop(wait=False)
            return
        slack = self.tracker.slack_ms(time.monotonic(), self.config.tpot_slo_ms) if running else None
        ws, speeds = self.worker_state, self.speeds
        self._apply(self.policy.plan(SlotContext(
            next_iteration=nxt, running=running, waiting=waiting,
            worker_min_units=ws.min_piece_units, next_pieces=ws.next_pieces,
            request_slack_ms=slack, corun_share=self.corun_share,
            topup_units_per_ms=speeds.topup_units_per_ms, corun_units_per_ms=speeds.corun_units_per_ms,
            idle_every_core_units_per_ms=speeds.idle_every_core_units_per_ms,
            idle_share_units_per_ms=speeds.idle_share_units_per_ms,
        )))

    def _apply(self, plan: Plan) -> None:
        self.meter.planned(plan)
        if plan.concurrent:
            self.corun_control.start(plan.share)
        elif self.corun.active:
            self.corun_control.stop(wait=plan.stop_wait)
        grant = plan.serial
        if grant is not None and grant.budget_units >= max(1, self.worker_state.min_piece_units):
            self.corun_control.run_serial(grant)
        # (A stop, waited for or not, has cleared ``active``; a piece still finishing runs
        # in SCHED_IDLE, which yields its core to decode at once.)
        self._next_alone = plan.leaves_decode_alone and not self.corun.active

    # -- message handlers --------------------------------------------------------------

    def _on_hello(self, msg: WorkerHello) -> None:
        self.supervisor.on_hello(msg)
        self.worker_state = WorkerState(has_work=False)
        self.corun_control.worker_gone()
        self.corun_control.worker_started(msg.green_contexts_failed)
        # A new worker inherits the spawning thread's cores (decode's): give it every core.
        self.corun_control.place_everywhere()
        if self.pool is not None:
            self.pool.worker_ready()
        if self.policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(True))

    def _on_state(self, msg: WorkerState) -> None:
        self.worker_state = msg

    def _on_report(self, msg: SlotReport) -> None:
        if msg.slot_id == CORUN_SLOT:
            self._on_corun_piece(msg)
            return
        self.metrics.slot_ran(msg.units, msg.duration_ms, msg.trained_tokens,
                              for_job=msg.job_id is not None)
        if msg.slot_id >= 0 and msg.units:  # free-run slices overlap decode; they are not slot work
            self.meter.add_work(msg.work)
        self.speeds.slot_ran(msg, self.profiling, self.meter.server_idle)

    def _on_corun_piece(self, msg: SlotReport) -> None:
        self.corun.on_piece(msg.started_at, msg.ended_at, msg.work, msg.trained_tokens)
        self.meter.trace_piece(msg)
        if msg.job_id is None:  # synthetic (start-up profile): not finetune work
            return
        self.metrics.corun_ran(msg.units, msg.trained_tokens)
        # Pieces while nothing decodes are the idle speeds (every core: harvest's
        # denominator); beside decode, the co-run speed.
        self.speeds.piece_ran(msg, self.corun.share, self.meter.server_idle and self.corun.active)

    def _on_corun_stopped(self, msg: CoRunStopped) -> None:
        self.corun.stopped(msg.seq, msg.stopped_at)

    def _on_reclaim_ack(self, msg: ReclaimAck) -> None:
        if self.pool is not None:
            self.pool.on_ack(msg)

    def _on_worker_death(self) -> None:
        self.worker_state = WorkerState(has_work=False)
        self.corun_control.worker_gone()
        if self.pool is not None:
            self.pool.worker_died()

    def _on_request_finished(self, tpot_ms: float, work_ms_per_token: float) -> None:
        self.metrics.request_finished(tpot_ms)
        self.policy.observe_request(tpot_ms, work_ms_per_token)

    # -- operator controls and status --------------------------------------------------

    def control(self, knobs: dict) -> bool:
        """Operator controls (see ``controls.py``); all or nothing."""
        return controls.apply(self, knobs)

    def free_units_per_s(self) -> float | None:
        return status_view.free_units_per_s(self.speeds, self.metrics)

    def status(self) -> dict:
        return status_view.status(self)

    def report(self) -> dict:
        return status_view.report(self)
