"""The finetune worker's event loop: messages in, slots executed, reports out.

The worker never decides *when* to train; the scheduler does. In serial mode
(the default) it sits blocked on its inbox until a :class:`SlotGrant` arrives,
runs whole pieces of finetune work within the grant's unit and time budgets,
and answers with a :class:`SlotReport` carrying the measured duration. In free-
run mode (``--harli-mode greedy``) it trains continuously between messages,
which is what uncoordinated co-location looks like.

Liveness runs both ways: the worker heart-beats the scheduler, and exits on
its own if the scheduler process goes away (its parent pid changes) or stays
silent far longer than any scheduler iteration could take.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

import zmq

from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.message import (
    Heartbeat, LeaseGrant, ReclaimAck, ReclaimRequest, SetFreeRun, Shutdown, SlotGrant,
    SlotReport, WorkerHello, WorkerState,
)
from harli_sgl.core.transport import PullQueue, PushQueue
from harli_sgl.worker.spec import WorkerSpec

logger = logging.getLogger(__name__)

# A scheduler silent this long is gone or wedged; serving is dead either way.
SCHEDULER_SILENCE_LIMIT_S = 120.0
# Free-run work per loop turn: small enough to keep the inbox responsive.
FREE_RUN_SLICE_MS = 20.0


class Executor(Protocol):
    """What the worker runs slots on (the job executor; see worker/jobs.py)."""

    def has_work(self) -> bool: ...

    def state(self) -> WorkerState: ...

    def run_slot(self, grant: SlotGrant) -> SlotReport: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class FinetuneWorker:
    def __init__(self, spec: WorkerSpec, shared: tuple[object, ...] = ()):
        self.spec = spec
        self._ctx = zmq.Context()
        self.inbox: PullQueue = PullQueue(self._ctx, spec.to_worker_addr, bind=False,
                                          generation=spec.generation)
        self.outbox: PushQueue = PushQueue(self._ctx, spec.from_worker_addr, bind=False,
                                           generation=spec.generation)
        self._stop_reason: str | None = None
        self._free_run = False
        self._last_heard = time.monotonic()
        self._last_beat = 0.0
        self._last_state: WorkerState | None = None
        self.executor: Executor | None = None
        self.arena = None  # LeasedArena over the engine's KV buffers, when the pool is on
        self._base_param_bytes = 0
        self._private_base_bytes = 0
        self._num_layers = 0
        self._init_executor(shared)
        self.dispatch = Dispatcher({
            Heartbeat: self._on_heartbeat,
            SlotGrant: self._on_grant,
            SetFreeRun: self._on_free_run,
            Shutdown: self._on_shutdown,
            LeaseGrant: self._on_lease,
            ReclaimRequest: self._on_reclaim,
        })

    def _init_executor(self, shared: tuple[object, ...]) -> None:
        if not shared:
            return
        from harli_sgl.worker.jobs import JobExecutor

        fused, kv = shared[0], shared[1] if len(shared) > 1 else None
        if kv is not None:
            from harli_sgl.core.pool.arena import LeasedArena

            # Never pack the shared base weights: they already live in shared memory.
            self.arena = LeasedArena(kv["buffers"], kv["page_tokens"], exclude=list(fused.values()))
        self.executor = JobExecutor(self.spec, (fused,), arena=self.arena)
        self._base_param_bytes = self.executor.base_param_bytes
        self._private_base_bytes = self.executor.private_base_bytes
        self._num_layers = self.executor.num_layers

    # -- loop -------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> None:
        self.outbox.send(WorkerHello(os.getpid(), self.spec.generation, self._num_layers,
                                     self._base_param_bytes, self._private_base_bytes))
        self._publish_state(force=True)
        while self._stop_reason is None:
            busy = self._free_run and self.executor is not None and self.executor.has_work()
            msg = self.inbox.recv(0.0 if busy else self.spec.config.worker_heartbeat_s)
            if msg is not None:
                self._last_heard = time.monotonic()
                self.dispatch(msg)
                continue
            if busy:
                self._run_free_slice()
            self._housekeeping()
        logger.info("worker stopping: %s", self._stop_reason)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.spec.config.worker_heartbeat_s:
            self.outbox.send(Heartbeat(time.time()))
            self._last_beat = now
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

    def _on_grant(self, grant: SlotGrant) -> None:
        if self.executor is None or not (grant.synthetic or self.executor.has_work()):
            report = SlotReport(grant.slot_id, units=0, tokens=0, duration_ms=0.0, pieces=0)
        else:
            report = self.executor.run_slot(grant)
        self.outbox.send(report)
        # Store writes and adapter publishing happen now, while decode runs again.
        if self.executor is not None:
            self.executor.tick()
        self._publish_state()

    def _run_free_slice(self) -> None:
        assert self.executor is not None
        report = self.executor.run_slot(
            SlotGrant(slot_id=-1, budget_units=1 << 40, budget_ms=FREE_RUN_SLICE_MS))
        self.outbox.send(report)
        self._housekeeping()

    def _on_free_run(self, msg: SetFreeRun) -> None:
        self._free_run = msg.enabled

    def _on_lease(self, msg: LeaseGrant) -> None:
        if self.arena is None:  # cannot use it: hand it straight back
            self.outbox.send(ReclaimAck(msg.lease_id))
            return
        self.arena.add_lease(msg.lease_id, msg.page_ranges)

    def _on_reclaim(self, msg: ReclaimRequest) -> None:
        # Messages are handled between pieces, so no backward holds a view into the
        # lease: moving its blocks out makes the pages safe to reuse.
        moved = self.arena.reclaim(msg.lease_id) if self.arena is not None else 0
        self.outbox.send(ReclaimAck(msg.lease_id, moved))

    def _on_shutdown(self, msg: Shutdown) -> None:
        self.stop(f"shutdown requested: {msg.reason}")
