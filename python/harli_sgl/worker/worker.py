"""The finetune worker's event loop: messages in, pieces executed, reports out.

The worker never decides *when* or *where* to train; the scheduler does. Three
ways to run:

* **serial** (a :class:`SlotGrant`): run whole pieces within the grant's unit
  and time budgets on every core, answer with a :class:`SlotReport`;
* **concurrent** (between :class:`CoRunStart` and :class:`CoRunStop`): run one
  piece at a time, back to back, each reported with its start and end, reading
  the inbox at every piece boundary, so a stop (or a serial top-up grant)
  takes effect within one piece. The scheduler pins the worker's threads; the
  worker only sizes its intra-op thread pool to the cores it was given;
* **free-run** (``--harli-mode greedy``): train continuously between messages,
  which is what uncoordinated co-location looks like.

Liveness runs both ways. Heartbeats come from a thread of their own, kept in
the normal scheduling class when the compute threads are moved to SCHED_IDLE,
and carry the age of the message loop's last turn: a busy host or a long
legitimate operation delays the loop, never the heartbeat, so only a truly
stuck loop looks hung. The worker exits on its own if the scheduler process
goes away (its parent pid changes) or stays silent far longer than any
scheduler iteration could take.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Protocol

import torch
import zmq

from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.gpu.fence import device_for
from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.message.from_worker import (
    CORUN_SLOT, FREE_RUN_SLOT, CoRunStopped, FromWorker, Heartbeat, ReclaimAck, SlotReport,
    WorkerHello, WorkerState,
)
from harli_sgl.core.message.to_worker import (
    CoRunStart, CoRunStop, FreeCompute, LeaseGrant, ReclaimRequest, SetFreeRun, Shutdown,
    SlotGrant, ToWorker,
)
from harli_sgl.core.transport import PullQueue, PushQueue
from harli_sgl.worker.device_shares import DeviceShares
from harli_sgl.worker.liveness import Liveness
from harli_sgl.worker.spec import SharedTensors, WorkerSpec

logger = logging.getLogger(__name__)

# A scheduler silent this long is gone or wedged; serving is dead either way.
SCHEDULER_SILENCE_LIMIT_S = 120.0
# Free-run work per loop turn: small enough to keep the inbox responsive.
FREE_RUN_SLICE_MS = 20.0
# Wall-clock guard of one co-run piece (a piece is tens of ms; this only bounds a pathology).
CORUN_PIECE_BOUND_MS = 5000.0


class Executor(Protocol):
    """What the worker runs slots on (the job executor; see worker/executor.py)."""

    def has_work(self) -> bool: ...

    def state(self) -> WorkerState: ...

    def run_slot(self, grant: SlotGrant) -> SlotReport: ...

    def next_piece_units(self, synthetic: bool = False) -> int: ...

    def tick(self) -> None: ...

    def set_free_compute(self, units_per_s: float | None) -> None: ...

    def close(self) -> None: ...


class FinetuneWorker:
    def __init__(self, spec: WorkerSpec, shared: SharedTensors | None = None):
        self.spec = spec
        self._ctx = zmq.Context()
        self.inbox: PullQueue[ToWorker] = PullQueue(self._ctx, spec.to_worker_addr, bind=False,
                                          generation=spec.generation)
        self.outbox: PushQueue[FromWorker] = PushQueue(self._ctx, spec.from_worker_addr, bind=False,
                                           generation=spec.generation)
        self._stop_reason: str | None = None
        self._free_run = False
        self._corun: CoRunStart | None = None
        self._last_heard = time.monotonic()
        self._loop_seen = time.monotonic()
        self._threads = max(1, spec.torch_threads)
        self._last_state: WorkerState | None = None
        self.executor: Executor | None = None
        self.arena = None  # LeasedArena over the engine's KV buffers, when the pool is on
        self._base_param_bytes = 0
        self._private_base_bytes: int | None = 0
        self._base_weight_segments: dict[str, int] = {}
        self._num_layers = 0
        self.device = device_for(spec.config.device)
        self.shares = DeviceShares(spec.config.device, spec.green_sms)
        self._init_executor(shared)
        self.dispatch: Dispatcher[ToWorker] = Dispatcher({
            Heartbeat: self._on_heartbeat,
            FreeCompute: self._on_free_compute,
            SlotGrant: self._on_grant,
            SetFreeRun: self._on_free_run,
            CoRunStart: self._on_corun_start,
            CoRunStop: self._on_corun_stop,
            Shutdown: self._on_shutdown,
            LeaseGrant: self._on_lease,
            ReclaimRequest: self._on_reclaim,
        })

    def _init_executor(self, shared: SharedTensors | None) -> None:
        if shared is None:
            return
        from harli_sgl.worker.executor import JobExecutor

        fused = shared.serving_weights
        if shared.kv_buffers:
            from harli_sgl.core.pool.arena import LeasedArena

            # Never pack the shared base weights: they already live in shared memory.
            self.arena = LeasedArena(list(shared.kv_buffers), shared.kv_page_tokens,
                                     exclude=list(fused.values()))
        self.executor = JobExecutor(self.spec, fused, arena=self.arena)
        self._base_param_bytes = self.executor.base_param_bytes
        self._private_base_bytes = self.executor.private_base_bytes
        self._base_weight_segments = self.executor.base_weight_segments
        self._num_layers = self.executor.num_layers

    # -- loop -------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> None:
        liveness = Liveness(self._ctx, self.spec.from_worker_addr, self.spec.generation,
                            self.spec.config.worker_heartbeat_s, lambda: self._loop_seen)
        tid = liveness.start_and_wait()
        self.outbox.send(WorkerHello(os.getpid(), self.spec.generation, self._num_layers,
                                     self._base_param_bytes, self._private_base_bytes, tid,
                                     self._base_weight_segments, self.shares.failed))
        self._publish_state(force=True)
        try:
            while self._stop_reason is None:
                self._loop_seen = time.monotonic()
                corun = self._corun is not None and self.executor is not None and \
                    (self._corun.synthetic or self.executor.has_work())
                free = self._free_run and self.executor is not None and self.executor.has_work()
                msg = self.inbox.recv(0.0 if corun or free else self.spec.config.worker_heartbeat_s)
                if msg is not None:
                    self._last_heard = time.monotonic()
                    self.dispatch(msg)
                    continue
                if corun:
                    self._run_corun_piece()
                elif free:
                    self._run_free_slice()
                self._housekeeping()
        finally:
            liveness.stop()
        logger.info("worker stopping: %s", self._stop_reason)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if os.getppid() != self.spec.parent_pid:
            self.stop("scheduler process is gone")
        elif now - self._last_heard > SCHEDULER_SILENCE_LIMIT_S:
            self.stop(f"scheduler silent for {now - self._last_heard:.0f}s")
        if self.executor is not None:
            self.executor.tick()
        self._publish_state()

    def _publish_state(self, force: bool = False) -> None:
        state = self.executor.state() if self.executor is not None else WorkerState(has_work=False)
        if force or state != self._last_state:
            self.outbox.send(state)
            self._last_state = state

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
        self.inbox.close()
        self.outbox.close()
        self._ctx.term()

    # -- handlers ---------------------------------------------------------------------

    def _on_heartbeat(self, _msg: Heartbeat) -> None:
        self._housekeeping()

    def _on_free_compute(self, msg: FreeCompute) -> None:
        if self.executor is not None:
            self.executor.set_free_compute(msg.units_per_s)

    def _fence(self) -> None:
        """On a GPU, wait for the queued kernels: timestamps and hand-backs must be real
        (a no-op on the CPU, whose ops are done when they return; ``core/gpu/fence.py``)."""
        self.device.sync()  # UNTESTED on a GPU: no GPU has been available

    def _set_threads(self, n: int) -> None:
        if n != torch.get_num_threads():
            torch.set_num_threads(n)

    def _on_grant(self, grant: SlotGrant) -> None:
        # A serial slot (or a hybrid top-up) has the whole device.
        self._set_threads(self._threads)
        if self.executor is None or not (grant.synthetic or self.executor.has_work()):
            report = SlotReport(grant.slot_id, NO_SLOT, tokens=0, duration_ms=0.0)
        else:
            started = time.monotonic()
            if grant.deadline:
                left_ms = max(0.0, (grant.deadline - started) * 1000.0)
                grant = dataclasses.replace(grant, budget_ms=min(grant.budget_ms, left_ms))
            report = self.executor.run_slot(grant)
            self._fence()
            report = dataclasses.replace(report, started_at=started, ended_at=time.monotonic())
        self.outbox.send(report)
        if self._corun is not None:
            self._set_threads(len(self._corun.cpus) or self._threads)
        # Store writes and adapter publishing happen now, while decode runs again.
        if self.executor is not None:
            self.executor.tick()
        self._publish_state()

    def _run_corun_piece(self) -> None:
        assert self.executor is not None and self._corun is not None
        synthetic = self._corun.synthetic
        units = self.executor.next_piece_units(synthetic)
        if units <= 0:
            return
        started = time.monotonic()
        with self.shares.scope(self._corun.num_sms):  # its share of the GPU's SMs
            report = self.executor.run_slot(SlotGrant(CORUN_SLOT, units, CORUN_PIECE_BOUND_MS,
                                                      synthetic=synthetic))
            self._fence()
        self.outbox.send(dataclasses.replace(report, started_at=started, ended_at=time.monotonic()))

    def _run_free_slice(self) -> None:
        assert self.executor is not None
        report = self.executor.run_slot(
            SlotGrant(slot_id=FREE_RUN_SLOT, budget_units=1 << 40, budget_ms=FREE_RUN_SLICE_MS))
        self._fence()  # a slice's time is device time, and the next message sees it done
        self.outbox.send(report)
        self._housekeeping()

    def _on_free_run(self, msg: SetFreeRun) -> None:
        self._free_run = msg.enabled
        self._set_threads(self._threads)

    def _on_corun_start(self, msg: CoRunStart) -> None:
        self._corun = msg
        self._set_threads(len(msg.cpus) or self._threads)

    def _on_corun_stop(self, msg: CoRunStop) -> None:
        # Messages are handled between pieces: this is the piece boundary.
        self._corun = None
        self._set_threads(self._threads)
        self.outbox.send(CoRunStopped(msg.seq, time.monotonic()))

    def _on_lease(self, msg: LeaseGrant) -> None:
        if self.arena is None:  # cannot use it: hand it straight back
            self.outbox.send(ReclaimAck(msg.lease_id))
            return
        self.arena.add_lease(msg.lease_id, msg.page_ranges)

    def _on_reclaim(self, msg: ReclaimRequest) -> None:
        # Messages are handled between pieces, so no backward holds a view into the
        # lease: moving its blocks out makes the pages safe to reuse once the GPU's
        # queued kernels (those that read them, and the copies out) have finished.
        moved = self.arena.reclaim(msg.lease_id) if self.arena is not None else 0
        self._fence()
        self.outbox.send(ReclaimAck(msg.lease_id, moved))

    def _on_shutdown(self, msg: Shutdown) -> None:
        self.stop(f"shutdown requested: {msg.reason}")
