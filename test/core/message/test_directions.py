"""Each process handles exactly the messages the other side sends: no orphan type, no gap."""

from __future__ import annotations

import os

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.message import from_worker, to_worker
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor
from harli_sgl.core.transport import new_ipc_path
from harli_sgl.worker.spec import WorkerSpec
from harli_sgl.worker.supervisor import WorkerSupervisor
from harli_sgl.worker.worker import FinetuneWorker


def test_the_scheduler_handles_every_worker_message():
    cfg = HarliConfig(mode="idle").resolved("cpu")
    sup = WorkerSupervisor(cfg)  # not started: only its handlers are read
    predictor = TwoStagePredictor()
    coord = SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, sup)
    try:
        assert coord.dispatch.handled_types() == from_worker.TYPES
    finally:
        coord.shutdown()


def test_the_worker_handles_every_scheduler_message():
    cfg = HarliConfig(mode="idle").resolved("cpu")
    spec = WorkerSpec(generation=0, to_worker_addr=new_ipc_path("t"), from_worker_addr=new_ipc_path("f"),
                      parent_pid=os.getpid(), config=cfg)
    worker = FinetuneWorker(spec)
    try:
        assert worker.dispatch.handled_types() == to_worker.TYPES
    finally:
        worker.inbox.close()
        worker.outbox.close()
