"""The CPU recipe: what stock SGLang 0.5.23 needs to serve on a host with no GPU.

Applied by the launcher only when the host has no NVIDIA driver; on a GPU host
nothing here runs and SGLang keeps every one of its defaults. It does three
things (docs/architecture.md and the README explain each):

1. ``SGLANG_USE_CPU_ENGINE=1``: SGLang's ``is_cpu()`` reads only this variable,
   and without it the rotary embedding imports vllm's CUDA ops.
2. The driver stand-in (:mod:`harli_sgl.platform.cuda_stub`) so sgl_kernel's
   extension modules load.
3. Server flags, each added only if the operator did not give that flag:
   CPU device, the pure-torch attention backend, no CUDA graphs, fp32 (bf16
   matmuls are slow on CPUs without AMX and the stock sgl-kernel wheel has no
   AMX kernels), token/request limits sized for a small host, and
   ``--sleep-on-idle``: SGLang's idle loop otherwise spins one core at 100%,
   which on a 2-core host takes half the machine away from finetuning. The
   idle sleeper polls the input sockets, so a request still wakes it at once.
"""

from __future__ import annotations

import argparse
import logging
import os

from harli_sgl.platform import cuda_stub

logger = logging.getLogger(__name__)

FlagValue = str | tuple[str, ...] | None

# (flag, value: None for a switch, a tuple for a multi-value flag). Limits, checked
# on the default model (SmolLM2-135M-Instruct, fp32; benchmark/stock_tpot.py,
# 2026-12-02): 16 running requests decode at 172-219 ms per token on a 2-core
# host (the batch-1 iteration is 70-77 ms: 30 layers of per-op overhead, so a
# batch of 16 costs only ~2.5x one), near the CPU TPOT SLO (config.py); more
# would only queue behind it. 16384 KV tokens are 720 MiB for SmolLM2 (46,080
# bytes per token: 30 layers x 3 KV heads x 64 x K and V x fp32): 16 requests of
# 1024 tokens, and the free part of it is what the pool lends to training.
CPU_FLAG_DEFAULTS: tuple[tuple[str, FlagValue], ...] = (
    ("--device", "cpu"),
    ("--attention-backend", "torch_native"),
    ("--disable-cuda-graph", None),
    ("--dtype", "float32"),
    ("--max-total-tokens", "16384"),
    ("--max-running-requests", "16"),
    ("--sleep-on-idle", None),
)


def _sglang_parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(add_help=False)
    ServerArgs.add_cli_args(parser)
    return parser


def given_flags(argv: list[str], parser: argparse.ArgumentParser | None = None) -> set[str]:
    """The ``dest`` names of SGLang flags present in argv (any alias, ``--f v`` or ``--f=v``)."""
    parser = parser or _sglang_parser()
    present = set()
    for action in parser._actions:  # argparse exposes no public iterator over actions
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                present.add(action.dest)
    return present


def with_defaults(argv: list[str], defaults: tuple[tuple[str, FlagValue], ...]) -> tuple[list[str], list[str]]:
    """Append each default flag the operator did not give; returns (argv, added flags)."""
    parser = _sglang_parser()
    present = given_flags(argv, parser)
    dest_of = {opt: a.dest for a in parser._actions for opt in a.option_strings}
    out, added = list(argv), []
    for flag, value in defaults:
        if dest_of[flag] in present:
            continue
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
        out += [flag, *values]
        added.append(" ".join([flag, *values]))
    return out, added


def apply(argv: list[str]) -> list[str]:
    """Apply the recipe to this process's environment and return the adjusted argv."""
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    stub = cuda_stub.ensure()
    if stub is not None:
        cuda_stub.activate(stub)
    argv, added = with_defaults(argv, CPU_FLAG_DEFAULTS)
    logger.info(
        "harli: no NVIDIA driver found; applying the CPU recipe: SGLANG_USE_CPU_ENGINE=1, "
        "driver stand-in %s, added flags: %s", stub, " ".join(added) or "(none)",
    )
    return argv
