from harli_sgl.core.gpu.driver import (
    check, parse_nvidia_smi, parse_proc_version, parse_torch_cuda,
)

PROC_PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n")
PROC_OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
    "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 06:54:38 UTC 2025\n"
    "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04) \n")
SMI_550 = """Wed Dec  2 06:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_580 = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.65.06              Driver Version: 580.65.06      CUDA Version: 13.0     |
+-----------------------------------------------------------------------------------------+
"""


def test_parse_the_kernel_modules_version_file():
    assert parse_proc_version(PROC_PROPRIETARY) == (550, 54, 15)
    assert parse_proc_version(PROC_OPEN) == (580, 65, 6)
    assert parse_proc_version("no driver here") is None


def test_parse_nvidia_smis_header():
    assert parse_nvidia_smi(SMI_550) == ((550, 54, 15), (12, 4))
    assert parse_nvidia_smi(SMI_580) == ((580, 65, 6), (13, 0))
    assert parse_nvidia_smi("NVIDIA-SMI has failed") == (None, None)


def test_parse_torch_cuda():
    assert parse_torch_cuda("13.0") == (13, 0)
    assert parse_torch_cuda("12.8") == (12, 8)
    assert parse_torch_cuda(None) is None


def test_a_cuda_13_torch_on_a_550_driver_fails_with_a_clear_message():
    result = check((13, 0), (550, 54, 15), (12, 4))
    assert not result.ok
    assert "CUDA 13.0" in result.message and "550.54.15" in result.message \
        and "580.65.06" in result.message
    # Without nvidia-smi the kernel module's version alone decides it.
    alone = check((13, 0), parse_proc_version(PROC_PROPRIETARY))
    assert not alone.ok and "needs NVIDIA driver 580.65.06 or later" in alone.message


def test_a_cuda_13_torch_on_a_580_driver_runs():
    result = check((13, 0), parse_proc_version(PROC_OPEN), (13, 0))
    assert result.ok and "580.65.06" in result.message


def test_an_older_minor_of_the_same_major_runs_under_minor_version_compatibility():
    result = check((12, 8), (550, 54, 15), (12, 4))
    assert result.ok and "minor version compatibility" in result.message


def test_a_cpu_torch_or_an_unreadable_driver_is_refused():
    assert not check(None, (580, 65, 6)).ok
    assert not check((13, 0), None).ok
