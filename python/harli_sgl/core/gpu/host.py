"""What a GPU host has: the facts every GPU decision is made from.

:class:`HostFacts` is the narrow interface between the decisions (pure, tested
on CPU) and the host. :func:`read_host` fills it on the running host; on a
host without an NVIDIA driver it answers "no GPU" without touching CUDA.
UNTESTED on a GPU host: the MPS pipe check, the green-context and SM-count
queries have never run on one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

# nvidia-cuda-mps-control's default pipe directory; CUDA_MPS_PIPE_DIRECTORY moves it.
MPS_PIPE_DIR_DEFAULT = "/tmp/nvidia-mps"
NVIDIA_VERSION_FILE = "/proc/driver/nvidia/version"
GREEN_CONTEXT_MIN_DRIVER = (12, 8)  # torch.cuda.green_contexts: "user mode driver 12.8+"


@dataclass(frozen=True)
class HostFacts:
    """Args:
        gpu: an NVIDIA driver is present.
        mps_running: an MPS control daemon answers on the pipe directory.
        mps_control: ``nvidia-cuda-mps-control`` is on PATH (harli could start a daemon).
        green_contexts: the installed torch can make green contexts here (it has
            ``torch.cuda.GreenContext``, cuda.bindings is installed, the driver is 12.8+).
        sm_count: the device's SMs (0 unknown).
        bf16: the device computes in bfloat16 (compute capability 8.0+).
    """

    gpu: bool = False
    mps_running: bool = False
    mps_control: bool = False
    green_contexts: bool = False
    sm_count: int = 0
    bf16: bool = False


def mps_pipe_dir() -> str:
    return os.environ.get("CUDA_MPS_PIPE_DIRECTORY", MPS_PIPE_DIR_DEFAULT)


def mps_running(pipe_dir: str | None = None) -> bool:
    """A daemon keeps a ``control`` FIFO in its pipe directory while it runs."""
    return os.path.exists(os.path.join(pipe_dir or mps_pipe_dir(), "control"))


def read_host(gpu: bool) -> HostFacts:
    """The facts of this host (CUDA is queried only when ``gpu``)."""
    if not gpu:
        return HostFacts()
    import torch  # the GPU side: UNTESTED

    green = False
    try:
        from torch.cuda import _utils as cuda_utils

        green = hasattr(torch.cuda, "GreenContext") and bool(cuda_utils._HAS_CUDA_BINDINGS)
    except ImportError:
        pass
    sm_count, bf16 = 0, False
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        sm_count, bf16 = props.multi_processor_count, props.major >= 8
        if green:
            from torch.cuda import green_contexts

            version = green_contexts._get_driver_version()  # e.g. 13000 for CUDA 13.0
            green = (version // 1000, version % 1000 // 10) >= GREEN_CONTEXT_MIN_DRIVER
    return HostFacts(gpu=True, mps_running=mps_running(),
                     mps_control=shutil.which("nvidia-cuda-mps-control") is not None,
                     green_contexts=green, sm_count=sm_count, bf16=bf16)


def start_mps(timeout_s: float = 10.0) -> bool:
    """Start an MPS control daemon (``nvidia-cuda-mps-control -d``); True once it answers.

    Must run before any process of the server creates a CUDA context: a context
    made before the daemon is not an MPS client and time-slices with the clients.
    UNTESTED: no GPU host has run it.
    """
    import subprocess
    import time

    try:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True, timeout=timeout_s,
                       capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return False
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if mps_running():
            return True
        time.sleep(0.1)
    return False


def stop_mps(timeout_s: float = 30.0) -> bool:
    """Ask the MPS control daemon to quit (``quit`` on ``nvidia-cuda-mps-control``'s stdin);
    True once its control pipe is gone.

    The daemon stops taking new clients and waits for its current ones to exit, so a
    server's own processes, already ending, are not cut off mid-kernel. UNTESTED on a
    GPU host; on CPU a stand-in for the control tool checks the exchange.
    """
    import subprocess
    import time

    try:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=True,
                       timeout=timeout_s, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return False
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if not mps_running():
            return True
        time.sleep(0.1)
    return False
