"""The driver stand-in is derived from the installed sgl_kernel and loads."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

from harli_sgl.platform import cuda_stub


def test_symbols_come_from_the_installed_wheel():
    symbols = cuda_stub.driver_symbols(cuda_stub._sgl_kernel_libraries())
    assert symbols, "sgl_kernel imports driver symbols"
    assert all(s.startswith("cu") and s[2].isupper() for s in symbols)
    # Runtime (cudaXxx) and library symbols are not stubbed: real wheels provide them.
    assert not any(s.startswith("cuda") or s.startswith("cublas") for s in symbols)


def test_built_stub_exports_each_symbol_returning_no_device(tmp_path):
    symbols = ["cuDriverGetVersion", "cuGetErrorString"]
    d = cuda_stub.build(symbols, str(tmp_path))
    lib = ctypes.CDLL(os.path.join(d, "libcuda.so.1"))
    assert lib.cuDriverGetVersion() == cuda_stub.CUDA_ERROR_NO_DEVICE
    # Building twice reuses the cached file.
    assert cuda_stub.build(symbols, str(tmp_path)) == d


def test_sgl_kernel_imports_with_the_stub_on_a_driverless_host():
    if cuda_stub.has_nvidia_driver():
        return  # a real driver is present; the stand-in is never used there
    d = cuda_stub.ensure()
    code = "import sgl_kernel; print('ok')"
    env = {**os.environ, "LD_LIBRARY_PATH": d, "SGLANG_USE_CPU_ENGINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]
