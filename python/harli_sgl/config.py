"""Harli's own configuration: one frozen dataclass, parsed apart from SGLang's flags.

The launcher splits argv in two. Harli's flags (``--harli-*`` and ``--tpot-slo-ms``)
are parsed here into a :class:`HarliConfig`; everything else goes to SGLang's
``prepare_server_args`` unchanged. The config is resolved once in the main process
(device defaults filled in, the workdir made absolute) and then handed to every
child process as the same frozen object, so no process re-derives it differently.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass

from harli_sgl.core.placement import default_split, format_cpus, parse_cpus

MODES = ("off", "greedy", "idle", "static", "spatial", "harli-serial", "harli")

# Default TPOT SLOs per device type. On a GPU, 50 ms/token is the common
# interactive target for 7-8B models (a reader sees ~20 tokens/s). On this
# project's CPU hosts the embedded default model decodes a batch in ~15-40 ms,
# so 100 ms leaves headroom comparable to what a GPU decode instance has.
DEFAULT_TPOT_SLO_MS = {"cuda": 50.0, "cpu": 100.0}


@dataclass(frozen=True)
class HarliConfig:
    """Everything Harli adds on top of SGLang's ServerArgs.

    Args:
        mode: slot policy (off, greedy, idle, static, spatial, harli-serial, harli); see docs/architecture.md.
        tpot_slo_ms: per-token latency SLO the scheduler protects; None until resolved.
        workdir: jobs, files, checkpoints, adapters and predictor profiles live here.
        static_slot_units: slot size used by ``--harli-mode static`` (token-layers).
        idle_slot_ms: budget of one slot while no request runs (bounds added TTFT).
        worker_heartbeat_s: heartbeat period in both directions.
        worker_heartbeat_timeout_s: silence after which a live-looking peer is declared hung.
        restart_backoff_s / restart_backoff_max_s: worker restart backoff, doubled per crash.
        lora_max_rank / lora_target_modules: LoRA capacity SGLang reserves at start-up so
            finished adapters can be hot-loaded; jobs may not exceed them.
        max_running_jobs: jobs trained at once (fair share of slots); the rest wait queued.
        micro_batch_size: examples per micro-batch (bounds the smallest slot a job can use).
        checkpoint_every_steps: optimizer steps between checkpoints (0 = never).
        max_file_bytes: upload size limit of /v1/files.
        profile_dir: where latency profiles are kept (default: <workdir>/predictor); one
            file per (model, device, dtype, threads), reused by every later start.
        startup_profile_s: time bound of the start-up latency profile (0 = never profile).
        cpu_split: on a CPU host, which cores decode keeps and which are the worker's
            share in the concurrent arrangement: ``auto`` (decode the first half,
            rounded up), ``none`` (no split: serial slots only), or ``DECODE/WORKER``
            core lists such as ``0/1`` or ``0-3/4-7``.
        gpu_worker_share: GPU hosts: the worker's share of the SMs for co-running, through
            CUDA MPS (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of the worker's context); 0 = serial
            slots only. UNTESTED: no GPU has been available to run it.
        decode_cpus / worker_cpus: the resolved split (empty: no split, or a GPU host).
        all_cpus: every core the server may use (the worker's share in serial and idle slots).
    """

    mode: str = "harli"
    tpot_slo_ms: float | None = None
    workdir: str = ".harli"
    static_slot_units: int = 2048
    idle_slot_ms: float = 50.0
    worker_heartbeat_s: float = 0.5
    worker_heartbeat_timeout_s: float = 10.0
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    lora_max_rank: int = 16
    lora_target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )
    max_running_jobs: int = 4
    micro_batch_size: int = 4
    checkpoint_every_steps: int = 25
    max_file_bytes: int = 64 * 2**20
    profile_dir: str | None = None
    startup_profile_s: float = 60.0
    cpu_split: str = "auto"
    gpu_worker_share: float = 0.0
    device: str = "cpu"
    decode_cpus: tuple[int, ...] = ()
    worker_cpus: tuple[int, ...] = ()
    all_cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--harli-mode must be one of {MODES}, got {self.mode!r}")
        if self.tpot_slo_ms is not None and self.tpot_slo_ms <= 0:
            raise ValueError(f"--tpot-slo-ms must be positive, got {self.tpot_slo_ms}")
        if self.static_slot_units < 0:
            raise ValueError("--harli-static-slot-units must be >= 0")
        if self.lora_max_rank <= 0:
            raise ValueError("--harli-lora-max-rank must be positive")
        for name in ("max_running_jobs", "micro_batch_size", "max_file_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--harli-{name.replace('_', '-')} must be >= 1")
        if self.startup_profile_s < 0:
            raise ValueError("--harli-startup-profile-s must be >= 0")
        if self.checkpoint_every_steps < 0:
            raise ValueError("--harli-checkpoint-every-steps must be >= 0")
        if not 0.0 <= self.gpu_worker_share < 1.0:
            raise ValueError(f"--harli-gpu-worker-share must be in [0, 1), got {self.gpu_worker_share}")
        if self.cpu_split not in ("auto", "none"):
            try:
                decode, worker = (parse_cpus(part) for part in self.cpu_split.split("/"))
            except ValueError:
                raise ValueError(f"--harli-cpu-split must be auto, none or DECODE/WORKER core "
                                 f"lists such as 0/1, got {self.cpu_split!r}") from None
            if set(decode) & set(worker):
                raise ValueError(f"--harli-cpu-split {self.cpu_split!r}: decode and worker cores overlap")

    @property
    def corun_possible(self) -> bool:
        """Whether the concurrent arrangement has a share of the device to run on."""
        return bool(self.worker_cpus) if self.device == "cpu" else self.gpu_worker_share > 0

    def resolved(self, device: str) -> HarliConfig:
        """Fill device-dependent defaults and make paths absolute (main process, once)."""
        slo = self.tpot_slo_ms
        if slo is None:
            slo = DEFAULT_TPOT_SLO_MS["cuda" if device == "cuda" else "cpu"]
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        decode: tuple[int, ...] = ()
        worker: tuple[int, ...] = ()
        if device == "cpu" and self.cpu_split == "auto":
            split = default_split(cpus)
            decode, worker = split if split is not None else ((), ())
        elif device == "cpu" and self.cpu_split != "none":
            decode, worker = (parse_cpus(part) for part in self.cpu_split.split("/"))
            if not set(decode + worker) <= set(cpus):
                raise ValueError(f"--harli-cpu-split {self.cpu_split!r} names cores outside this "
                                 f"process's CPUs {format_cpus(cpus)}")
        return dataclasses.replace(
            self,
            tpot_slo_ms=float(slo),
            workdir=os.path.abspath(os.path.expanduser(self.workdir)),
            profile_dir=os.path.abspath(os.path.expanduser(self.profile_dir)) if self.profile_dir else None,
            device=device,
            decode_cpus=decode, worker_cpus=worker, all_cpus=cpus,
        )

    @property
    def finetune_enabled(self) -> bool:
        return self.mode != "off"


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    d = HarliConfig()
    g = parser.add_argument_group("harli")
    g.add_argument("--harli-mode", choices=MODES, default=d.mode,
                   help="How finetune work is co-located with decode (default: harli).")
    g.add_argument("--tpot-slo-ms", type=float, default=None,
                   help="TPOT SLO in ms. Default: 50 on GPU, 100 on CPU.")
    g.add_argument("--harli-workdir", default=d.workdir,
                   help="Directory for jobs, files, checkpoints and adapters (default: ./.harli).")
    g.add_argument("--harli-static-slot-units", type=int, default=d.static_slot_units,
                   help="Slot size for --harli-mode static, in token-layers.")
    g.add_argument("--harli-idle-slot-ms", type=float, default=d.idle_slot_ms,
                   help="Budget of a slot while the server is idle.")
    g.add_argument("--harli-lora-max-rank", type=int, default=d.lora_max_rank,
                   help="Largest LoRA rank a finetune job may use (reserved in SGLang's LoRA pool).")
    g.add_argument("--harli-lora-target-modules", nargs="+", default=list(d.lora_target_modules),
                   help="Modules finetune jobs may target (reserved in SGLang's LoRA pool).")
    g.add_argument("--harli-max-running-jobs", type=int, default=d.max_running_jobs,
                   help="Jobs trained at once, sharing slots fairly; others wait queued.")
    g.add_argument("--harli-micro-batch-size", type=int, default=d.micro_batch_size,
                   help="Examples per training micro-batch.")
    g.add_argument("--harli-checkpoint-every-steps", type=int, default=d.checkpoint_every_steps,
                   help="Optimizer steps between checkpoints (0 = never).")
    g.add_argument("--harli-max-file-bytes", type=int, default=d.max_file_bytes,
                   help="Upload size limit of /v1/files (default 64 MiB).")
    g.add_argument("--harli-profile-dir", default=None,
                   help="Where latency profiles are kept (default: <workdir>/predictor).")
    g.add_argument("--harli-startup-profile-s", type=float, default=d.startup_profile_s,
                   help="Time bound of the start-up latency profile; 0 disables it.")
    g.add_argument("--harli-cpu-split", default=d.cpu_split,
                   help="CPU hosts: decode's cores and the worker's share for co-running, as "
                        "DECODE/WORKER (e.g. 0/1), 'auto' (default: decode keeps the first half) "
                        "or 'none' (serial slots only).")
    g.add_argument("--harli-gpu-worker-share", type=float, default=d.gpu_worker_share,
                   help="GPU hosts: the worker's SM share for co-running through CUDA MPS "
                        "(0 = serial slots only). Untested.")


def from_cli_args(ns: argparse.Namespace) -> HarliConfig:
    return HarliConfig(
        mode=ns.harli_mode,
        tpot_slo_ms=ns.tpot_slo_ms,
        workdir=ns.harli_workdir,
        static_slot_units=ns.harli_static_slot_units,
        idle_slot_ms=ns.harli_idle_slot_ms,
        lora_max_rank=ns.harli_lora_max_rank,
        lora_target_modules=tuple(ns.harli_lora_target_modules),
        max_running_jobs=ns.harli_max_running_jobs,
        micro_batch_size=ns.harli_micro_batch_size,
        checkpoint_every_steps=ns.harli_checkpoint_every_steps,
        max_file_bytes=ns.harli_max_file_bytes,
        profile_dir=ns.harli_profile_dir,
        startup_profile_s=ns.harli_startup_profile_s,
        cpu_split=ns.harli_cpu_split,
        gpu_worker_share=ns.harli_gpu_worker_share,
    )


def split_argv(argv: list[str]) -> tuple[HarliConfig, list[str]]:
    """Parse Harli's flags out of argv; return the config and SGLang's remaining argv."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_cli_args(parser)
    ns, rest = parser.parse_known_args(argv)
    return from_cli_args(ns), rest
