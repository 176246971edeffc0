"""Can this host's NVIDIA driver run the installed torch's CUDA? Checked at start, with a clear message.

torch wheels are built for one CUDA toolkit (``torch.version.cuda``, e.g. 13.0
for ``+cu130``). Within a CUDA major version a newer toolkit runs on an older
driver of that major ("minor version compatibility"), but not across majors: a
CUDA 13 build needs a 580+ driver. Without this check the server gets as far as
SGLang's first CUDA call and fails with CUDA's own error.

The facts come from ``/proc/driver/nvidia/version`` (the kernel module's
version) and, when it runs, ``nvidia-smi`` (whose header names the highest CUDA
version the driver supports). Parsing and the decision are pure and tested on
real strings; reading them on a GPU host is UNTESTED.
"""

from __future__ import annotations

import re
import subprocess
from typing import NamedTuple

from harli_sgl.core.gpu.host import NVIDIA_VERSION_FILE

# The oldest Linux driver of each CUDA major (NVIDIA's CUDA compatibility table).
MIN_DRIVER_FOR_CUDA_MAJOR = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}

_KERNEL_MODULE = re.compile(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")
_SMI_DRIVER = re.compile(r"Driver Version:\s*(\d+(?:\.\d+)+)")
_SMI_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def parse_proc_version(text: str) -> tuple[int, ...] | None:
    """The kernel module's version from ``/proc/driver/nvidia/version`` (None: not found)."""
    m = _KERNEL_MODULE.search(text)
    return _version(m.group(1)) if m else None


def parse_nvidia_smi(text: str) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
    """(driver version, highest CUDA version it supports) from ``nvidia-smi``'s header."""
    d, c = _SMI_DRIVER.search(text), _SMI_CUDA.search(text)
    return (_version(d.group(1)) if d else None,
            (int(c.group(1)), int(c.group(2))) if c else None)


def parse_torch_cuda(text: str | None) -> tuple[int, int] | None:
    """``torch.version.cuda`` ("13.0") as (13, 0); None for a CPU or ROCm build."""
    if not text:
        return None
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


class DriverCheck(NamedTuple):
    ok: bool
    message: str


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in v[:1]) + "".join(f".{p:02d}" if i == 2 else f".{p}"
                                                     for i, p in enumerate(v[1:], 1))


def check(torch_cuda: tuple[int, int] | None, driver: tuple[int, ...] | None,
          driver_cuda: tuple[int, int] | None = None) -> DriverCheck:
    """Whether a driver (kernel module version; the CUDA it supports, if known) runs ``torch_cuda``."""
    if torch_cuda is None:
        return DriverCheck(False, "the installed torch has no CUDA support (a CPU build); "
                           "install a CUDA build of torch or run on a CPU host")
    if driver is None:
        return DriverCheck(False, "an NVIDIA driver is present but its version could not be "
                           f"read from {NVIDIA_VERSION_FILE}")
    need = MIN_DRIVER_FOR_CUDA_MAJOR.get(torch_cuda[0])
    tc = f"{torch_cuda[0]}.{torch_cuda[1]}"
    if driver_cuda is not None and driver_cuda[0] < torch_cuda[0]:
        return DriverCheck(False, f"the installed torch is built for CUDA {tc}, but NVIDIA "
                           f"driver {_fmt(driver)} supports CUDA up to {driver_cuda[0]}."
                           f"{driver_cuda[1]}: install driver {_fmt(need) if need else 'newer'} "
                           "or later, or a torch built for your driver's CUDA")
    if need is not None and driver < need:
        return DriverCheck(False, f"the installed torch is built for CUDA {tc}, which needs "
                           f"NVIDIA driver {_fmt(need)} or later; this host has {_fmt(driver)}: "
                           "update the driver, or install a torch built for an older CUDA")
    if driver_cuda is not None and driver_cuda < torch_cuda:
        return DriverCheck(True, f"NVIDIA driver {_fmt(driver)} supports CUDA up to "
                           f"{driver_cuda[0]}.{driver_cuda[1]}, older than torch's {tc}: runs "
                           "under CUDA's minor version compatibility (no PTX JIT of newer code)")
    return DriverCheck(True, f"NVIDIA driver {_fmt(driver)} runs torch's CUDA {tc}")


def read_and_check() -> DriverCheck:
    """Check this host (UNTESTED on a GPU host: reads /proc and runs nvidia-smi)."""
    import torch

    try:
        with open(NVIDIA_VERSION_FILE) as f:
            driver = parse_proc_version(f.read())
    except OSError:
        driver = None
    driver_cuda = None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        smi_driver, driver_cuda = parse_nvidia_smi(out)
        driver = driver or smi_driver
    except (OSError, subprocess.TimeoutExpired):
        pass
    return check(parse_torch_cuda(torch.version.cuda), driver, driver_cuda)
