"""HarliScheduler: SGLang's Scheduler plus a slot coordinator and a finetune worker.

A thin subclass; all co-location logic lives in the engine-agnostic
:class:`~harli_sgl.core.coordinator.SlotCoordinator`. The hooks are:

* ``__init__``: after the stock init (model loaded, KV pool built), start the
  coordinator and, unless ``--harli-mode off``, the supervised worker;
* ``process_batch_result``: after iteration N's tokens were handed to the
  detokenizer, report the iteration and let the coordinator run a slot, so a
  slot delays iteration N+1, never the tokens of N;
* ``on_idle``: the same with an empty batch;
* ``get_internal_state``: adds ``harli`` to SGLang's internal-state readback,
  which is how ``GET /harli/status`` in the main process reads this process.
"""

from __future__ import annotations

import logging
import os

import zmq

from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.runtime_context import get_model, get_parallel, get_serving

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.policy.base import IterationFeatures
from harli_sgl.core.policy.registry import make_policy

logger = logging.getLogger(__name__)


class HarliScheduler(Scheduler):
    def __init__(self, server_args, port_args):
        super().__init__(server_args, port_args)
        self._init_harli(server_args._harli)

    def _init_harli(self, config: HarliConfig) -> None:
        self.harli_config = config
        supervisor = None
        if config.finetune_enabled:
            if get_parallel().tp_size > 1 or get_parallel().pp_size > 1:
                logger.warning("harli: finetuning needs tp_size == pp_size == 1; serving only")
            else:
                supervisor = self._start_worker(config)
        self.harli = SlotCoordinator(config, make_policy(config), supervisor)
        logger.info("harli: scheduler ready, mode=%s tpot_slo_ms=%.1f", config.mode, config.tpot_slo_ms)

    def _start_worker(self, config: HarliConfig):
        from harli_sgl.sglang.weights import share_serving_weights
        from harli_sgl.worker.spec import WorkerSpec
        from harli_sgl.worker.supervisor import WorkerSupervisor

        serving = get_serving()
        host = "127.0.0.1" if serving.host in ("0.0.0.0", "::", "") else serving.host
        spec = WorkerSpec(
            generation=0, to_worker_addr="", from_worker_addr="", parent_pid=0, config=config,
            model_path=get_model().model_path, served_model_name=serving.served_model_name,
            torch_threads=len(os.sched_getaffinity(0)), server_url=f"http://{host}:{serving.port}",
            api_key=serving.api_key,
        )
        fused = share_serving_weights(self.tp_worker.model_runner.model)
        supervisor = WorkerSupervisor(config, spec, extra_args=(fused,))
        supervisor.start()
        if self.idle_sleeper is not None and hasattr(self.idle_sleeper, "poller"):
            # Wake the idle scheduler when the worker reports (e.g. new work).
            self.idle_sleeper.poller.register(supervisor.inbox.socket, zmq.POLLIN)
        return supervisor

    # -- hooks ---------------------------------------------------------------------------

    def process_batch_result(self, batch, result):
        super().process_batch_result(batch, result)
        running = self.running_batch
        bs = running.batch_size() if running is not None and not running.is_empty() else 0
        ctx = int(running.seq_lens_cpu.sum()) if bs and running.seq_lens_cpu is not None else 0
        self.harli.after_iteration(IterationFeatures(bs, ctx + bs), running=bs,
                                   waiting=len(self.waiting_queue))

    def on_idle(self):
        super().on_idle()
        self.harli.on_idle(waiting=len(self.waiting_queue))

    def maybe_sleep_on_idle(self):
        # An idle slot is about to run in on_idle(); it replaces the sleep.
        if not self.harli.has_idle_work():
            super().maybe_sleep_on_idle()

    def get_internal_state(self, recv_req):
        out = super().get_internal_state(recv_req)
        out.internal_state["harli"] = self.harli_status()
        return out

    def harli_status(self) -> dict:
        cfg = self.harli_config
        core = self.harli.status()
        return {
            "mode": cfg.mode,
            "tpot_slo_ms": cfg.tpot_slo_ms,
            "worker": core["worker"],
            "jobs": None,
            "finetune_tokens_per_s": None,
            "slo_attainment": None,
            "pool": None,
            "predictor": None,
            "slots": {"run": core["slots_run"], "overrun": core["slots_overrun"]},
        }
