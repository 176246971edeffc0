"""A stand-in ``libcuda.so.1`` for hosts without an NVIDIA driver.

sgl_kernel's extension modules link against the driver library, so on a GPU-less
host importing them fails with "libcuda.so.1: cannot open shared object file",
although SGLang's CPU path never calls into them. This module builds a tiny
shared library exporting exactly the driver symbols the installed sgl_kernel
imports (found with ``nm -D --undefined-only``), each returning
``CUDA_ERROR_NO_DEVICE`` (100). The symbol list is derived from the installed
wheel, never hard-coded, and the build is cached under a hash of that list.

It is put in front of the loader only on hosts with no NVIDIA driver, so it can
never shadow a real one.

``python -m harli_sgl.platform.cuda_stub --ensure`` builds it (set-up time).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

from harli_sgl import env

# Driver API names are cuXxx; runtime (cudaXxx) and library (cublasXxx) symbols are
# satisfied by the CUDA wheels that ship with torch, so they must not be stubbed.
_DRIVER_SYMBOL = re.compile(r"^cu[A-Z]\w*$")
CUDA_ERROR_NO_DEVICE = 100


def has_nvidia_driver() -> bool:
    """True when a real NVIDIA kernel driver is present (and HARLI_FORCE_CPU is unset)."""
    if env.FORCE_CPU.get():
        return False
    return os.path.exists("/proc/driver/nvidia/version")


def _sgl_kernel_libraries() -> list[str]:
    spec = importlib.util.find_spec("sgl_kernel")
    if spec is None or not spec.submodule_search_locations:
        return []
    libs: list[str] = []
    for root in spec.submodule_search_locations:
        libs += glob.glob(os.path.join(root, "**", "*.so*"), recursive=True)
    return sorted(libs)


def driver_symbols(libraries: list[str]) -> list[str]:
    """Undefined ``cu[A-Z]*`` symbols across the given shared objects."""
    symbols: set[str] = set()
    for lib in libraries:
        out = subprocess.run(["nm", "-D", "--undefined-only", lib],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            name = line.split()[-1].split("@")[0] if line.split() else ""
            if _DRIVER_SYMBOL.match(name):
                symbols.add(name)
    return sorted(symbols)


def stub_dir() -> str:
    return os.path.join(env.CACHE_DIR.get(), "cuda-stub")


def build(symbols: list[str], out_dir: str) -> str:
    """Compile the stand-in into ``out_dir/<hash>/libcuda.so.1``; returns its directory."""
    digest = hashlib.sha256("\n".join(symbols).encode()).hexdigest()[:16]
    target_dir = os.path.join(out_dir, digest)
    target = os.path.join(target_dir, "libcuda.so.1")
    if os.path.exists(target):
        return target_dir
    os.makedirs(target_dir, exist_ok=True)
    source = "".join(f"int {s}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}\n" for s in symbols)
    with tempfile.TemporaryDirectory() as tmp:
        c_file = os.path.join(tmp, "libcuda_stub.c")
        with open(c_file, "w") as f:
            f.write("/* harli_sgl: CPU stand-in for the NVIDIA driver library. */\n" + source)
        partial = os.path.join(tmp, "libcuda.so.1")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1",
                        "-o", partial, c_file], check=True)
        os.replace(partial, target)  # atomic: a concurrent reader never sees half a file
    return target_dir


def ensure() -> str | None:
    """Build (if needed) and return the stand-in's directory, or None on a driver host."""
    if has_nvidia_driver():
        return None
    libraries = _sgl_kernel_libraries()
    if not libraries:
        raise RuntimeError("sgl_kernel is not installed; run scripts/setup.sh")
    symbols = driver_symbols(libraries)
    return build(symbols, stub_dir())


def activate(directory: str) -> None:
    """Make this process and every child it starts resolve libcuda.so.1 to the stand-in.

    Children (SGLang spawns them) read ``LD_LIBRARY_PATH`` at exec. This process's
    loader read it at start-up, so the stand-in is also loaded here by path; later
    ``dlopen``s that need ``libcuda.so.1`` match it by its SONAME.
    """
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if directory not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([directory, *paths])
    ctypes.CDLL(os.path.join(directory, "libcuda.so.1"), mode=ctypes.RTLD_GLOBAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensure", action="store_true", help="build it if missing and print its directory")
    args = parser.parse_args()
    if args.ensure:
        directory = ensure()
        if directory is None:
            print("[cuda_stub] NVIDIA driver present: no stand-in needed")
        else:
            n = len(driver_symbols(_sgl_kernel_libraries()))
            print(f"[cuda_stub] stand-in with {n} driver symbols at {directory}/libcuda.so.1")
    sys.exit(0)


if __name__ == "__main__":
    main()
