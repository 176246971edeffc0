"""What a finetune worker incarnation is started with (pickled into the spawned process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harli_sgl.config import HarliConfig


@dataclass(frozen=True)
class WorkerSpec:
    """Args:
        generation: incarnation number; every message carries it (see core.transport).
        to_worker_addr / from_worker_addr: the scheduler-bound ZMQ endpoints.
        parent_pid: the scheduler's pid; the worker exits when its parent changes.
        model_path: the served model (config and tokenizer are read from here).
        served_model_name: the base name adapters are published under.
        torch_threads: intra-op threads for training (serial mode uses the whole host).
        server_url / api_key: the HTTP server, for publishing finished adapters.
        admin_api_key: SGLang's ``--admin-api-key``; when set, admin routes such as
            ``/load_lora_adapter`` require it instead of ``api_key``.
        corun_means: how the worker co-runs (``core/gpu/corun_means.Means`` value): on a
            GPU, ``mps_fixed`` caps its MPS share at start, ``mps_green`` holds green contexts.
        green_sms: the SM counts of the green contexts it holds (``mps_green`` only).
    """

    generation: int
    to_worker_addr: str
    from_worker_addr: str
    parent_pid: int
    config: HarliConfig
    model_path: str = ""
    served_model_name: str = ""
    torch_threads: int = 1
    server_url: str = ""
    # Never in a repr: a logged spec must not print the keys.
    api_key: str | None = field(default=None, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)
    corun_means: str = "serial"
    green_sms: tuple[int, ...] = ()


@dataclass(frozen=True)
class SharedTensors:
    """The scheduler's tensors a worker maps zero-copy, its one start-up argument besides the spec.

    They reach the spawned process through multiprocessing's pickling, which passes
    shared-memory file descriptors (CPU) or CUDA IPC handles (GPU), never bytes.

    Args:
        serving_weights: SGLang's serving tensors by parameter name, fused ``qkv_proj`` and
            ``gate_up_proj`` included (see ``harli_sgl/sglang/weights.py``).
        kv_buffers: the KV pool's K and V buffers, when the unified pool is lent; else empty.
        kv_page_tokens: tokens per KV page (with ``kv_buffers``).
    """

    serving_weights: dict[str, Any]
    kv_buffers: tuple[Any, ...] = ()
    kv_page_tokens: int = 0
