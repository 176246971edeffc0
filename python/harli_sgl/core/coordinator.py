"""Per-iteration co-location logic: measure, ask the policy, run the slot.

The coordinator is the engine-agnostic half of the HarliScheduler. The SGLang
subclass calls :meth:`after_iteration` once per scheduler iteration (with the
batch reduced to :class:`IterationFeatures`) and :meth:`on_idle` on idle passes;
everything else happens here:

1. pump the worker's inbox without blocking (heartbeats, state, late reports)
   and let the supervisor detect deaths and respawn;
2. ask the policy for a grant, given what the next iteration will look like;
3. run the slot *serially*: send the grant, block until the worker's report
   (bounded by the grant's time budget plus a margin), so TPOT = decode + slot
   and nothing else competes with the decode forward for the cores.

If the worker is absent, restarting, or has no work, step 3 never happens and
an iteration costs a zero-timeout poll.
"""

from __future__ import annotations

import logging
import time

from harli_sgl.config import HarliConfig
from harli_sgl.core.dispatch import Dispatcher
from harli_sgl.core.message import (
    Heartbeat, SetFreeRun, SlotGrant, SlotReport, WorkerHello, WorkerState,
)
from harli_sgl.core.policy.base import Grant, IterationFeatures, SlotContext, SlotPolicy

logger = logging.getLogger(__name__)

# A slot may overrun its budget by this much before the scheduler stops waiting.
REPORT_GRACE_MS = 25.0


class SlotCoordinator:
    def __init__(self, config: HarliConfig, policy: SlotPolicy, supervisor=None):
        self.config = config
        self.policy = policy
        self.supervisor = supervisor
        self.worker_state = WorkerState(has_work=False)
        self._slot_id = 0
        self._units_per_ms: float | None = None
        self.slots_run = 0
        self.slots_overrun = 0
        self.trained_tokens = 0
        handlers: dict[type, object] = {WorkerState: self._on_state, SlotReport: self._on_report}
        if supervisor is not None:
            handlers[Heartbeat] = supervisor.on_heartbeat
            handlers[WorkerHello] = self._on_hello
        self.dispatch = Dispatcher(handlers)  # type: ignore[arg-type]

    # -- scheduler hooks ---------------------------------------------------------------

    def after_iteration(self, next_iteration: IterationFeatures, running: int, waiting: int) -> None:
        self._pump()
        self._maybe_run_slot(next_iteration, running, waiting)

    def on_idle(self, waiting: int) -> None:
        self._pump()
        self._maybe_run_slot(IterationFeatures(0, 0), 0, waiting)

    def has_idle_work(self) -> bool:
        """True when an idle pass would run a slot (so the scheduler must not sleep)."""
        sup = self.supervisor
        return (sup is not None and sup.ready and self.worker_state.has_work
                and not self.policy.free_run)

    def shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.shutdown()

    # -- internals ---------------------------------------------------------------------

    def _pump(self) -> None:
        sup = self.supervisor
        if sup is None:
            return
        sup.check()
        while (msg := sup.inbox.recv(0.0)) is not None:
            sup.note_alive()
            self.dispatch(msg)

    def _maybe_run_slot(self, nxt: IterationFeatures, running: int, waiting: int) -> None:
        sup = self.supervisor
        if sup is None or not sup.ready or not self.worker_state.has_work:
            return
        grant = self.policy.grant(SlotContext(
            next_iteration=nxt, running=running, waiting=waiting,
            worker_min_units=self.worker_state.min_piece_units,
            worker_units_per_ms=self._units_per_ms,
        ))
        if grant is not None and grant.budget_units >= max(1, self.worker_state.min_piece_units):
            self._run_slot(grant)

    def _run_slot(self, grant: Grant) -> SlotReport | None:
        sup = self.supervisor
        self._slot_id += 1
        sent_at = time.perf_counter()
        sup.outbox.send(SlotGrant(self._slot_id, grant.budget_units, grant.budget_ms,
                                  grant.device_share))
        deadline = sent_at + (grant.budget_ms + REPORT_GRACE_MS) / 1000.0
        while True:
            msg = sup.inbox.recv(max(0.0, deadline - time.perf_counter()))
            if msg is None:
                # Serving must not wait on a slow or dead worker; its report is
                # accounted for whenever it arrives.
                self.slots_overrun += 1
                return None
            sup.note_alive()
            self.dispatch(msg)
            if isinstance(msg, SlotReport) and msg.slot_id == self._slot_id:
                return msg

    # -- message handlers --------------------------------------------------------------

    def _on_hello(self, msg: WorkerHello) -> None:
        self.supervisor.on_hello(msg)
        self.worker_state = WorkerState(has_work=False)
        if self.policy.free_run:
            self.supervisor.outbox.send(SetFreeRun(True))

    def _on_state(self, msg: WorkerState) -> None:
        self.worker_state = msg

    def _on_report(self, msg: SlotReport) -> None:
        self.slots_run += 1
        self.trained_tokens += msg.trained_tokens
        if msg.units > 0 and msg.duration_ms > 0:
            rate = msg.units / msg.duration_ms
            self._units_per_ms = rate if self._units_per_ms is None else \
                0.8 * self._units_per_ms + 0.2 * rate

    def status(self) -> dict:
        worker = self.supervisor.status() if self.supervisor is not None else \
            {"alive": False, "pid": None, "restarts": 0}
        return {"worker": worker, "policy": self.policy.status(), "slots_run": self.slots_run,
                "slots_overrun": self.slots_overrun}
