"""Start the supervised finetune worker from inside SGLang's scheduler process.

The worker maps the serving weights (and, where the pool is lendable, the KV
buffers) zero-copy, so it is started only after SGLang loaded the model and
built its KV pool, and only with tp_size == pp_size == 1. It reaches the HTTP
server (to publish finished adapters) through a local URL.
"""

from __future__ import annotations

import logging
import os

import zmq
from sglang.srt.runtime_context import get_model, get_parallel, get_serving

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator.corun_control import cpu_share
from harli_sgl.core.gpu import corun_means as means
from harli_sgl.core.gpu.corun_means import Means, MeansChoice
from harli_sgl.core.gpu.host import read_host
from harli_sgl.core.gpu.share import green_steps

logger = logging.getLogger(__name__)


def local_url(host: str, port: int) -> str:
    """A URL this host can reach the server on (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{port}"


def can_finetune() -> bool:
    if get_parallel().tp_size > 1 or get_parallel().pp_size > 1:
        logger.warning("harli: finetuning needs tp_size == pp_size == 1; serving only")
        return False
    return True


def corun_means(config: HarliConfig) -> tuple[MeansChoice, int]:
    """How the worker co-runs on this host, logged once; and the GPU's SM count.

    On a GPU host the MPS daemon was started (or not) by the launcher before any CUDA
    context existed (``platform/gpu_recipe.py``); here it is only checked. UNTESTED
    on a GPU: only the decision (``core/gpu/corun_means.py``) has run.
    """
    gpu = config.device == "cuda"
    facts = read_host(gpu)
    share = config.gpu_worker_share if gpu else cpu_share(config)
    choice = means.decide(facts, share, may_start_mps=False,
                          start_failed=gpu and config.gpu_start_mps and not facts.mps_running)
    log = logger.info if choice.corun or share <= 0 else logger.warning
    log("harli: co-running means %s: %s", choice.means.value, choice.why.text)
    return choice, facts.sm_count


def start_worker(scheduler, config: HarliConfig, pages=None, corun: MeansChoice | None = None,
                 sm_count: int = 0):
    """A started WorkerSupervisor sharing the scheduler's weights (and ``pages``' buffers)."""
    from harli_sgl.core.shared_weights import shm_segments
    from harli_sgl.sglang.weights import share_serving_weights
    from harli_sgl.worker.spec import SharedTensors, WorkerSpec
    from harli_sgl.worker.supervisor import WorkerSupervisor

    serving = get_serving()
    spec = WorkerSpec(
        generation=0, to_worker_addr="", from_worker_addr="", parent_pid=0, config=config,
        model_path=get_model().model_path, served_model_name=serving.served_model_name,
        torch_threads=len(config.all_cpus) or len(os.sched_getaffinity(0)),
        server_url=local_url(serving.host, serving.port),
        api_key=serving.api_key, admin_api_key=getattr(serving, "admin_api_key", None),
        corun_means=corun.means.value if corun is not None else Means.SERIAL.value,
        green_sms=tuple(s.num_sms for s in green_steps(config.gpu_worker_share, sm_count))
        if corun is not None and corun.means is Means.MPS_GREEN else (),
    )
    fused = share_serving_weights(scheduler.tp_worker.model_runner.model)
    shared = SharedTensors(fused) if pages is None else \
        SharedTensors(fused, tuple(pages.buffers), pages.page_tokens)
    supervisor = WorkerSupervisor(
        config, spec, shared=shared, serving_weight_segments=shm_segments(fused.values()),
        kv_pool_segments=shm_segments(pages.buffers) if pages is not None else None)
    supervisor.start()
    sleeper = scheduler.idle_sleeper
    if sleeper is not None and hasattr(sleeper, "poller"):
        # Wake the idle scheduler when the worker reports (e.g. new work).
        sleeper.poller.register(supervisor.inbox.socket, zmq.POLLIN)
    return supervisor


def predictor_path(scheduler, config: HarliConfig) -> str:
    """Where this model, device, dtype and thread count keep their latency profile."""
    import torch

    from harli_sgl.core.predictor.profile_store import profile_path

    dtype = str(scheduler.tp_worker.model_runner.dtype).replace("torch.", "")
    return profile_path(config.profile_dir or os.path.join(config.workdir, "predictor"),
                        get_model().model_path, config.device, dtype, torch.get_num_threads())
