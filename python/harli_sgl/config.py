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

from harli_sgl.cpus import default_split, format_cpus, parse_cpus
from harli_sgl.limits import Limits

# A fleet's job store (--harli-db); checked here once, and by the store's opener.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


MODES = ("off", "greedy", "idle", "static", "spatial", "harli-serial", "harli")

# Default TPOT SLOs per device type. On a GPU, 50 ms/token is the common
# interactive target for 7-8B models (a reader sees ~20 tokens/s). On CPU it is
# set by a stated rule from stock SGLang on the default model (SmolLM2-135M,
# fp32, 2-core host; benchmark/stock_tpot.py, docs/benchmarks.md): 1.25 x stock's
# TPOT p50 at batch 8 with decode on one core (149 ms, 3 reps 143-160),
# rounded up to 10 ms. Stock at batch 1 is 70-77 ms; at batch 16 (the server's
# --max-running-requests) it is 172-219 ms on both cores and 208-220 ms on one,
# so near full admission even stock misses 190 ms: the SLO is one for the load
# below that, and the co-location benchmark's rates stop where `off` misses it.
DEFAULT_TPOT_SLO_MS = {"cuda": 50.0, "cpu": 190.0}


def _flag(default, help: str, *, flag: str | None = None, **argparse_kwargs):
    """A config field that is also a command-line flag: declared once, here.

    ``flag`` overrides the derived name ``--harli-<field-name>``; ``argparse_kwargs``
    (``type``, ``choices``, ``nargs``) go to ``add_argument`` as they are. A tuple
    default is parsed with ``nargs="+"`` and turned back into a tuple.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "argparse": argparse_kwargs})


@dataclass(frozen=True)
class HarliConfig:
    """Everything Harli adds on top of SGLang's ServerArgs.

    Each field that the user sets is declared once, with its flag and help text
    (:func:`_flag`); :func:`add_cli_args` and :func:`from_cli_args` are derived from
    those declarations, so a new flag is one line. The fields after them are
    resolved by :meth:`resolved` in the main process: the device, and the cores of
    the CPU split (``decode_cpus``, ``worker_cpus``, ``all_cpus``; empty on a GPU
    host or without a split). See docs/usage.md for what each setting does.
    """

    mode: str = _flag("harli", "How finetune work is co-located with decode (default: harli).",
                      choices=MODES)
    tpot_slo_ms: float | None = _flag(None, "TPOT SLO in ms. Default: 50 on GPU, 190 on CPU.",
                                      flag="--tpot-slo-ms", type=float)
    workdir: str = _flag(".harli", "This instance's own directory: its SQLite store (without "
                         "--harli-db) and, without --harli-shared-dir, files, checkpoints, "
                         "adapters and latency profiles (default: ./.harli).")
    db: str | None = _flag(None, "The job store: a postgresql://... URL shared by a fleet of "
                           "instances (default: SQLite in the workdir, one instance).")
    shared_dir: str | None = _flag(None, "Storage every instance of a fleet reaches: uploaded "
                                   "files, checkpoints, adapters and latency profiles "
                                   "(default: the workdir).")
    instance_id: str | None = _flag(None, "This instance's name in the fleet's store: it holds "
                                    "the leases of the jobs it trains (default: host:port).")
    lease_s: float = _flag(30.0, "Seconds a running job's lease lasts without renewal; after "
                           "that another instance resumes the job from its checkpoint.",
                           type=float)
    static_slot_units: int = _flag(2048, "Slot size for --harli-mode static, in token-layers.",
                                   type=int)
    idle_slot_ms: float = _flag(50.0, "Budget of a slot while the server is idle.", type=float)
    worker_heartbeat_s: float = 0.5          # heartbeat period in both directions
    worker_heartbeat_timeout_s: float = 10.0  # silence after which a live-looking peer is hung
    restart_backoff_s: float = 0.5            # worker restart backoff, doubled per crash ...
    restart_backoff_max_s: float = 30.0       # ... up to this
    lora_max_rank: int = _flag(16, "Largest LoRA rank a finetune job may use (reserved in "
                               "SGLang's LoRA pool).", type=int)
    lora_target_modules: tuple[str, ...] = _flag(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Modules finetune jobs may target (reserved in SGLang's LoRA pool).")
    max_running_jobs: int = _flag(4, "Jobs trained at once, sharing slots fairly; others wait "
                                  "queued.", type=int)
    micro_batch_size: int = _flag(4, "Examples per training micro-batch.", type=int)
    micro_batch_tokens: int = _flag(2048, "Padded tokens per training micro-batch at most: "
                                    "longer ones are split, with the same gradient (a "
                                    "SmolLM2 micro-batch holds ~2.4 MB of activations per "
                                    "token until its backward).", type=int)
    checkpoint_every_steps: int = _flag(25, "Optimizer steps between checkpoints (0 = never).",
                                        type=int)
    max_file_bytes: int = _flag(64 * 2**20, "Upload size limit of /v1/files (default 64 MiB).",
                                type=int)
    tenant_max_running_jobs: int | None = _flag(None, "Each tenant's jobs trained at once; more "
                                                "wait queued (default: no limit).", type=int)
    tenant_max_queued_jobs: int | None = _flag(None, "Each tenant's jobs waiting to run; one more "
                                               "is refused with 429 (default: no limit).", type=int)
    tenant_max_stored_bytes: int | None = _flag(None, "Each tenant's total bytes of uploaded files; "
                                                "an upload past it is refused with 429 (default: "
                                                "no limit).", type=int)
    profile_dir: str | None = _flag(None, "Where latency profiles are kept, one file per (model, "
                                    "device, dtype, threads) (default: <shared dir>/predictor).")
    startup_profile_s: float = _flag(60.0, "Time bound of the start-up latency profile; 0 "
                                     "disables it.", type=float)
    cpu_split: str = _flag("auto", "CPU hosts: decode's cores and the worker's share for "
                           "co-running, as DECODE/WORKER (e.g. 0/1), 'auto' (default: decode "
                           "keeps the first half) or 'none' (serial slots only).")
    prefill_cpus: str = _flag("all", "CPU hosts with a split: the cores a prefill batch runs on, "
                              "'all' (default: every core; the worker's SCHED_IDLE threads "
                              "yield them at once) or 'decode' (decode's own).",
                              choices=("decode", "all"))
    widen_decode: str = _flag("auto", "CPU hosts with a split: 'auto' gives decode every core "
                              "while nothing trains beside it (no job, a serial-only policy, an "
                              "iteration harli leaves alone); 'never' keeps it on its own cores, "
                              "for instances that share a host's cores.", choices=("auto", "never"))
    gpu_worker_share: float = _flag(0.0, "GPU hosts: the worker's SM share for co-running "
                                    "through CUDA MPS (0 = serial slots only). UNTESTED: no GPU "
                                    "has been available to run it.", type=float)
    gpu_start_mps: bool = _flag(False, "GPU hosts: start the CUDA MPS control daemon if none "
                                "runs (co-running needs one; without it slots are serial). "
                                "UNTESTED: no GPU has been available to run it.",
                                action="store_true")
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
        for name in ("max_running_jobs", "micro_batch_size", "micro_batch_tokens", "max_file_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--harli-{name.replace('_', '-')} must be >= 1")
        if self.prefill_cpus not in ("decode", "all"):
            raise ValueError(f"--harli-prefill-cpus must be decode or all, got {self.prefill_cpus!r}")
        if self.widen_decode not in ("auto", "never"):
            raise ValueError(f"--harli-widen-decode must be auto or never, got {self.widen_decode!r}")
        self.tenant_limits  # validates them
        if self.lease_s <= 0:
            raise ValueError("--harli-lease-s must be positive")
        if self.db is not None and not is_postgres_url(self.db):
            raise ValueError(f"--harli-db must be a postgresql:// URL, got {self.db!r} "
                             "(without it the store is SQLite in the workdir)")
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
    def tenant_limits(self) -> Limits:
        """Every tenant's quotas unless an admin gives it its own (see harli_sgl.jobs.tenants)."""
        return Limits(self.tenant_max_running_jobs, self.tenant_max_queued_jobs,
                      self.tenant_max_stored_bytes)

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
        workdir = _abspath(self.workdir)
        shared = _abspath(self.shared_dir) if self.shared_dir else workdir
        return dataclasses.replace(
            self,
            tpot_slo_ms=float(slo),
            workdir=workdir,
            shared_dir=shared,
            profile_dir=_abspath(self.profile_dir) if self.profile_dir else os.path.join(shared, "predictor"),
            device=device,
            decode_cpus=decode, worker_cpus=worker, all_cpus=cpus,
        )

    @property
    def finetune_enabled(self) -> bool:
        return self.mode != "off"


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _flags() -> list[tuple[dataclasses.Field, str]]:
    return [(f, f.metadata["flag"] or "--harli-" + f.name.replace("_", "-"))
            for f in dataclasses.fields(HarliConfig) if "help" in f.metadata]


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("harli")
    for f, flag in _flags():
        kwargs = dict(f.metadata["argparse"])
        if isinstance(f.default, tuple):
            kwargs.setdefault("nargs", "+")
        g.add_argument(flag, dest=f.name, default=f.default, help=f.metadata["help"], **kwargs)


def from_cli_args(ns: argparse.Namespace) -> HarliConfig:
    values = {f.name: getattr(ns, f.name) for f, _ in _flags()}
    return HarliConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def split_argv(argv: list[str]) -> tuple[HarliConfig, list[str]]:
    """Parse Harli's flags out of argv; return the config and SGLang's remaining argv."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_cli_args(parser)
    ns, rest = parser.parse_known_args(argv)
    return from_cli_args(ns), rest
