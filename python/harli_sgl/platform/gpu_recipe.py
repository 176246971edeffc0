"""What the launcher does on a GPU host before SGLang starts: check, choose dtypes, own MPS.

In the main process, before any CUDA context exists (so nothing here
initialises CUDA):

1. the NVIDIA driver is checked against the installed torch's CUDA
   (:mod:`harli_sgl.core.gpu.driver`); a mismatch stops the launch with a clear
   message instead of CUDA's own error at SGLang's first call
   (``HARLI_SKIP_DRIVER_CHECK=1`` overrides it, e.g. with NVIDIA's
   forward-compatibility package);
2. the serving dtype is chosen so the worker never trains in fp16 without a loss
   scaler (:mod:`harli_sgl.core.gpu.precision`): ``--dtype bfloat16`` is added
   when harli finetunes and the operator gave none, and fp16 finetuning is refused;
3. co-running needs a CUDA MPS control daemon: with ``--harli-gpu-start-mps``
   and a share asked for, one is started now, so that the scheduler and the
   worker are both MPS clients. The scheduler decides the means from what it
   then finds (``sglang/worker_start.py``).

UNTESTED on a GPU host: no GPU has been lent; the decisions it applies are
unit-tested, and :func:`apply` is tested with the facts a CPU test passes in.
"""

from __future__ import annotations

import atexit
import logging
import subprocess

from harli_sgl import env
from harli_sgl.config import HarliConfig
from harli_sgl.core.gpu import corun_means, driver, precision
from harli_sgl.core.gpu.host import HostFacts, mps_running, start_mps, stop_mps

logger = logging.getLogger(__name__)


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in argv (``--f v`` or ``--f=v``; the last one wins)."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def compute_capability() -> tuple[int, int] | None:
    """GPU 0's compute capability from nvidia-smi, without a CUDA context (UNTESTED)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
        major, minor = out.split()[0].split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def apply(argv: list[str], harli: HarliConfig, check: driver.DriverCheck | None = None,
          bf16: bool | None = None, facts: HostFacts | None = None) -> list[str]:
    """SGLang's argv for this GPU host (raises SystemExit when it cannot serve as asked).

    ``check``, ``bf16`` and ``facts`` default to this host's (tests pass their own).
    """
    check = check or driver.read_and_check()
    if not check.ok and not env.SKIP_DRIVER_CHECK.get():
        raise SystemExit(f"harli_sgl: {check.message} (set {env.SKIP_DRIVER_CHECK.name}=1 to "
                         "start anyway)")
    logger.info("harli: %s", check.message)
    if bf16 is None:
        cc = compute_capability()
        bf16 = cc is None or cc >= (8, 0)  # unknown: every current data-centre GPU has bf16
    choice = precision.decide(True, harli.finetune_enabled, flag_value(argv, "--dtype"), bf16)
    if choice.refused:
        raise SystemExit(f"harli_sgl: {choice.refused}")
    out = list(argv)
    if choice.serve_dtype:
        out += ["--dtype", choice.serve_dtype]
        logger.info("harli: serving in %s so the worker trains without fp16 (LoRA weights and "
                    "optimizer state fp32, forward autocast to %s)", choice.serve_dtype,
                    choice.autocast_dtype)
    if harli.finetune_enabled:
        facts = facts or HostFacts(gpu=True, mps_running=mps_running(),
                                   mps_control=_has_mps_control())
        first = corun_means.decide(facts, harli.gpu_worker_share, harli.gpu_start_mps)
        if first.start_mps:
            logger.info("harli: %s", first.why.text)
            if not start_mps():
                logger.error("harli: starting the CUDA MPS control daemon failed; the scheduler "
                             "will use serial slots")
            else:
                # Harli started it, so harli stops it when the server exits: a daemon left
                # behind would make every later CUDA process on the host an MPS client.
                atexit.register(_stop_own_mps)
    return out


def _stop_own_mps() -> None:
    if stop_mps():
        logger.info("harli: stopped the CUDA MPS control daemon it had started")
    else:
        logger.warning("harli: the CUDA MPS control daemon it had started did not quit; "
                       "stop it with: echo quit | nvidia-cuda-mps-control")


def _has_mps_control() -> bool:
    import shutil

    return shutil.which("nvidia-cuda-mps-control") is not None
