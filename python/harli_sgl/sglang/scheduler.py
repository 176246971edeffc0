"""HarliScheduler: SGLang's Scheduler plus a slot coordinator and a finetune worker.

A thin subclass; all co-location logic lives in the engine-agnostic
:class:`~harli_sgl.core.coordinator.SlotCoordinator`. The hooks are:

* ``__init__``: after the stock init (model loaded, KV pool built), build the
  predictor, the policy and the coordinator and, unless ``--harli-mode off``,
  share the serving weights and start the supervised worker;
* ``run_batch``: a launch ends the previous launch-to-launch interval, which is
  one measured iteration for the predictor (SGLang's own decode regression
  uses the same cadence);
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
import os
import time

import torch
import zmq
from sglang.srt.managers.io_struct import SetInternalStateReqOutput
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.runtime_context import get_model, get_observability, get_parallel, get_serving

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import IterationFeatures
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.registry import make_predictor

logger = logging.getLogger(__name__)


def batch_features(batch) -> IterationFeatures:
    seq_lens = batch.seq_lens_cpu
    ctx = int(seq_lens.sum()) if seq_lens is not None else 0
    if not batch.forward_mode.is_extend():
        return IterationFeatures(batch.batch_size(), ctx)
    extend = int(batch.extend_num_tokens or 0)
    attention = sum(e * (p + e) for p, e in zip(batch.prefix_lens or (), batch.extend_lens or ()))
    return IterationFeatures(batch.batch_size(), ctx, extend, attention)


class HarliScheduler(Scheduler):
    def __init__(self, server_args, port_args):
        super().__init__(server_args, port_args)
        self._init_harli(server_args._harli)

    def _init_harli(self, config: HarliConfig) -> None:
        supervisor, pages = None, None
        if config.finetune_enabled and config.decode_cpus:
            self._place_decode(config)
        self._widened = False
        if config.finetune_enabled:
            if get_parallel().tp_size > 1 or get_parallel().pp_size > 1:
                logger.warning("harli: finetuning needs tp_size == pp_size == 1; serving only")
            else:
                from harli_sgl.sglang.pool import lendable_pages

                pages = lendable_pages(self.token_to_kv_pool_allocator)
                supervisor = self._start_worker(config, pages)
        predictor = make_predictor()
        self.harli = SlotCoordinator(config, make_policy(config, predictor), predictor, supervisor,
                                     predictor_path=self._predictor_path(config))
        self._harli_pool = None
        if pages is not None:
            from harli_sgl.sglang.pool import ServingPool

            self._harli_pool = ServingPool(pages, self.harli, self.model_config.context_len)
        self.harli_prometheus = None
        if get_observability().enable_metrics:
            from harli_sgl.sglang.prometheus import HarliPrometheus

            self.harli_prometheus = HarliPrometheus(get_serving().served_model_name)
            logger.info("harli: exporting harli:* metrics to /metrics")
        logger.info("harli: scheduler ready, mode=%s tpot_slo_ms=%.1f", config.mode, config.tpot_slo_ms)

    def _place_decode(self, config: HarliConfig) -> None:
        """Decode keeps its cores; the rest are the worker's share for co-running.

        SGLang binds its CPU threads only where sgl_kernel's AMX path is enabled;
        elsewhere torch uses every core. Pinning this process's threads and sizing
        torch's pool to decode's cores makes the split real either way.
        """
        from harli_sgl.core import placement

        placement.pin_threads(config.decode_cpus)
        torch.set_num_threads(len(config.decode_cpus))
        logger.info("harli: decode on cores %s (%d threads); worker share: cores %s",
                    placement.format_cpus(config.decode_cpus), torch.get_num_threads(),
                    placement.format_cpus(config.worker_cpus))

    def _widen(self, wide: bool) -> None:
        """Run this process on every core (``wide``) or on decode's cores only.

        Wide while no finetune job runs here (the coordinator's
        ``decode_on_every_cpu``: nothing to harvest, so serving gets the whole host),
        and for a prefill batch under ``--harli-prefill-cpus all`` (prefill is
        compute-bound and uses a second core where decode does not; the worker's
        threads there are SCHED_IDLE, so this process's threads take the core at
        once). Applied at a launch, only when the wanted state changes.
        """
        from harli_sgl.core import placement

        cfg = self.harli.config
        cpus = cfg.all_cpus if wide else cfg.decode_cpus
        placement.pin_threads(cpus)
        torch.set_num_threads(len(cpus))
        self._widened = wide

    def _maintain_pool(self) -> None:
        if self._harli_pool is not None:
            self._harli_pool.reserve(self.running_batch, self.waiting_queue)

    def _start_worker(self, config: HarliConfig, pages=None):
        from harli_sgl.core.shared_weights import shm_segments
        from harli_sgl.sglang.weights import share_serving_weights
        from harli_sgl.worker.spec import WorkerSpec
        from harli_sgl.worker.supervisor import WorkerSupervisor

        serving = get_serving()
        host = "127.0.0.1" if serving.host in ("0.0.0.0", "::", "") else serving.host
        spec = WorkerSpec(
            generation=0, to_worker_addr="", from_worker_addr="", parent_pid=0, config=config,
            model_path=get_model().model_path, served_model_name=serving.served_model_name,
            torch_threads=len(config.all_cpus) or len(os.sched_getaffinity(0)), server_url=f"http://{host}:{serving.port}",
            api_key=serving.api_key, admin_api_key=getattr(serving, "admin_api_key", None),
        )
        fused = share_serving_weights(self.tp_worker.model_runner.model)
        kv = {"buffers": pages.buffers, "page_tokens": pages.page_tokens} if pages is not None else None
        supervisor = WorkerSupervisor(config, spec, extra_args=(fused, kv))
        supervisor.serving_weight_segments = shm_segments(fused.values())
        if pages is not None:
            supervisor.kv_pool_segments = shm_segments(pages.buffers)
        supervisor.start()
        if self.idle_sleeper is not None and hasattr(self.idle_sleeper, "poller"):
            # Wake the idle scheduler when the worker reports (e.g. new work).
            self.idle_sleeper.poller.register(supervisor.inbox.socket, zmq.POLLIN)
        return supervisor

    def _predictor_path(self, config: HarliConfig) -> str:
        from harli_sgl.core.predictor.profile_store import profile_path

        dtype = str(self.tp_worker.model_runner.dtype).replace("torch.", "")
        return profile_path(config.profile_dir or os.path.join(config.workdir, "predictor"),
                            get_model().model_path, config.device, dtype, torch.get_num_threads())

    # -- hooks ---------------------------------------------------------------------------

    def run_batch(self, batch, *args, **kwargs):
        cfg = self.harli.config  # prefill_cpus can change at run time (POST /harli/policy)
        no_work = self.harli.decode_on_every_cpu()
        prefill_all = cfg.prefill_cpus == "all" and cfg.decode_cpus and cfg.finetune_enabled and \
            batch.forward_mode.is_extend()
        self.harli.on_launch(batch_features(batch), time.monotonic(), wide=no_work)
        if bool(no_work or prefill_all) != self._widened:
            self._widen(bool(no_work or prefill_all))
        return super().run_batch(batch, *args, **kwargs)

    def process_batch_result(self, batch, result):
        super().process_batch_result(batch, result)
        self.harli.on_tokens([(r.rid, len(r.output_ids), r.finished()) for r in batch.reqs],
                             time.monotonic())
        running = self.running_batch
        bs = running.batch_size() if running is not None and not running.is_empty() else 0
        ctx = int(running.seq_lens_cpu.sum()) if bs and running.seq_lens_cpu is not None else 0
        # A queued request means a prefill next only if the batch has room to admit it;
        # at --max-running-requests it waits, and the next iteration is plain decode.
        admissible = len(self.waiting_queue) if bs < self.max_running_requests else 0
        self.harli.after_iteration(IterationFeatures(bs, ctx + bs), running=bs, waiting=admissible)
        self._maintain_pool()
        self._export_metrics()

    def on_idle(self):
        super().on_idle()
        self.harli.on_idle(waiting=len(self.waiting_queue))
        self._maintain_pool()
        self._export_metrics()

    def _export_metrics(self) -> None:
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
