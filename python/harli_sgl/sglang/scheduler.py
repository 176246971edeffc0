"""HarliScheduler: SGLang's Scheduler plus a slot coordinator and a finetune worker.

Hooks only; all co-location logic lives in the engine-agnostic
:class:`~harli_sgl.core.coordinator.SlotCoordinator`, the pool's SGLang side in
``pool.py``, CPU affinity in ``decode_cpus.py`` and the worker's start in
``worker_start.py``. The hooks are:

* ``__init__``: after the stock init (model loaded, KV pool built), build the
  predictor, the policy and the coordinator and, unless ``--harli-mode off``,
  share the serving weights and start the supervised worker;
* ``run_batch``: a launch ends the previous launch-to-launch interval, which is
  one measured iteration for the predictor (SGLang's own decode regression
  uses the same cadence);
* ``is_disable_overlap_for_batch``: under SGLang's overlap loop (GPU), process
  batch N's results before launching N+1 whenever a serial slot may follow, so
  the slot runs with the GPU idle rather than beside N+1;
* ``process_batch_result``: iteration N's tokens were just handed to the
  detokenizer; record per-request token timing, then let the coordinator run
  a slot, so a slot delays iteration N+1 and never the tokens of N;
* ``on_idle`` / ``maybe_sleep_on_idle``: idle slots, and no idle sleep while
  an idle slot is due;
* ``get_internal_state`` / ``set_internal_state``: SGLang's readback and knob
  channel carry ``harli`` status out and ``harli_*`` controls in, which is how
  ``/harli/*`` routes in the main process reach this process.
"""

from __future__ import annotations

import logging
import time

from sglang.srt.managers.io_struct import SetInternalStateReqOutput
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.runtime_context import get_observability, get_serving

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor
from harli_sgl.sglang.decode_cpus import DecodeCpus
from harli_sgl.sglang.features import batch_features, next_decode
from harli_sgl.sglang.pool import ServingPool, lendable_pages
from harli_sgl.sglang.worker_start import can_finetune, corun_means, predictor_path, start_worker

logger = logging.getLogger(__name__)


class HarliScheduler(Scheduler):
    def __init__(self, server_args, port_args):
        super().__init__(server_args, port_args)
        self._init_harli(server_args._harli)

    def _init_harli(self, config: HarliConfig) -> None:
        self._harli_cpus = DecodeCpus(config)
        supervisor, pages = None, None
        means, sm_count = corun_means(config)
        if config.finetune_enabled and can_finetune():
            pages = lendable_pages(self.token_to_kv_pool_allocator)
            supervisor = start_worker(self, config, pages, means, sm_count)
        predictor = TwoStagePredictor()
        self.harli = SlotCoordinator(config, make_policy(config, predictor), predictor, supervisor,
                                     predictor_path=predictor_path(self, config),
                                     means=means, sm_count=sm_count)
        self._harli_pool = None if pages is None else \
            ServingPool(pages, self.harli, self.model_config.context_len,
                        getattr(self.tp_worker.model_runner, "forward_stream", None))
        self.harli_prometheus = None
        if get_observability().enable_metrics:
            from harli_sgl.sglang.prometheus import HarliPrometheus

            self.harli_prometheus = HarliPrometheus(get_serving().served_model_name)
            logger.info("harli: exporting harli:* metrics to /metrics")
        logger.info("harli: scheduler ready, mode=%s tpot_slo_ms=%.1f", config.mode, config.tpot_slo_ms)

    # -- hooks ---------------------------------------------------------------------------

    def run_batch(self, batch, *args, **kwargs):
        wide = self.harli.launch_on_every_cpu(batch.forward_mode.is_extend())
        self.harli.on_launch(batch_features(batch), time.monotonic(), wide=wide)
        self._harli_cpus.at_launch(wide)
        return super().run_batch(batch, *args, **kwargs)

    def is_disable_overlap_for_batch(self, batch, last_batch) -> bool:
        # Under the overlap loop, a serial slot must not run beside the next batch:
        # drain first whenever one may follow (core/gpu/overlap.py). UNTESTED on a GPU.
        return super().is_disable_overlap_for_batch(batch, last_batch) or \
            self.harli.drain_before_launch(self.enable_overlap)

    def process_batch_result(self, batch, result):
        super().process_batch_result(batch, result)
        self.harli.on_tokens([(r.rid, len(r.output_ids), r.finished()) for r in batch.reqs],
                             time.monotonic())
        nxt = next_decode(self.running_batch)
        # A queued request means a prefill next only if the batch has room to admit it;
        # at --max-running-requests it waits, and the next iteration is plain decode.
        admissible = len(self.waiting_queue) if nxt.batch_size < self.max_running_requests else 0
        self.harli.after_iteration(nxt, running=nxt.batch_size, waiting=admissible)
        self._harli_tail()

    def on_idle(self):
        super().on_idle()
        self.harli.on_idle(waiting=len(self.waiting_queue))
        self._harli_tail()

    def _harli_tail(self) -> None:
        if self._harli_pool is not None:
            self._harli_pool.reserve(self.running_batch, self.waiting_queue)
        if self.harli_prometheus is not None and self.harli_prometheus.due():
            self.harli_prometheus.update(self.harli_status())

    def maybe_sleep_on_idle(self):
        # An idle slot is about to run in on_idle(); it replaces the sleep.
        if not self.harli.has_idle_work():
            super().maybe_sleep_on_idle()

    def get_internal_state(self, recv_req):
        out = super().get_internal_state(recv_req)
        out.internal_state["harli"] = self.harli_status()
        return out

    def set_internal_state(self, recv_req):
        requested = recv_req.server_args
        ours = {k: v for k, v in requested.items() if k.startswith("harli_")}
        if not ours:
            return super().set_internal_state(recv_req)
        if len(ours) != len(requested):
            logger.warning("harli: refusing to mix harli_* and SGLang knobs in one update")
            return SetInternalStateReqOutput(updated=False)
        return SetInternalStateReqOutput(updated=self.harli_control(ours))

    # -- control and status --------------------------------------------------------------

    def harli_control(self, knobs: dict) -> bool:
        """``harli_<name>`` knobs from the main process, applied by the coordinator."""
        return self.harli.control({k.removeprefix("harli_"): v for k, v in knobs.items()})

    def harli_status(self) -> dict:
        return self.harli.report()
