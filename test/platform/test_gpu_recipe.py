"""The GPU recipe's decisions, applied with the host facts a test passes in (no GPU here)."""

from __future__ import annotations

import pytest

from harli_sgl.config import HarliConfig
from harli_sgl.core.gpu.driver import DriverCheck
from harli_sgl.core.gpu.host import HostFacts
from harli_sgl.platform import gpu_recipe

OK = DriverCheck(True, "NVIDIA driver 580.65.06 runs torch's CUDA 13.0")
OLD = DriverCheck(False, "the installed torch is built for CUDA 13.0, which needs NVIDIA driver "
                  "580.65.06 or later; this host has 550.54.15")
NO_MPS = HostFacts(gpu=True, mps_running=False, mps_control=False)


def test_flag_value():
    assert gpu_recipe.flag_value(["--dtype", "float16", "--port", "1"], "--dtype") == "float16"
    assert gpu_recipe.flag_value(["--dtype=bfloat16"], "--dtype") == "bfloat16"
    assert gpu_recipe.flag_value(["--port", "1"], "--dtype") is None


def test_an_old_driver_stops_the_launch_with_the_checks_message(monkeypatch):
    monkeypatch.delenv("HARLI_SKIP_DRIVER_CHECK", raising=False)
    with pytest.raises(SystemExit, match="needs NVIDIA driver 580.65.06"):
        gpu_recipe.apply([], HarliConfig(), check=OLD, bf16=True, facts=NO_MPS)
    monkeypatch.setenv("HARLI_SKIP_DRIVER_CHECK", "1")
    assert gpu_recipe.apply([], HarliConfig(), check=OLD, bf16=True, facts=NO_MPS)


def test_finetuning_serves_bf16_unless_the_operator_chose():
    argv = gpu_recipe.apply(["--port", "1"], HarliConfig(), check=OK, bf16=True, facts=NO_MPS)
    assert argv == ["--port", "1", "--dtype", "bfloat16"]
    given = gpu_recipe.apply(["--dtype", "float32"], HarliConfig(), check=OK, bf16=True,
                             facts=NO_MPS)
    assert given == ["--dtype", "float32"]
    serving_only = gpu_recipe.apply([], HarliConfig(mode="off"), check=OK, bf16=True)
    assert serving_only == []


def test_fp16_finetuning_is_refused_at_launch():
    with pytest.raises(SystemExit, match="loss scaler"):
        gpu_recipe.apply(["--dtype", "float16"], HarliConfig(), check=OK, bf16=True, facts=NO_MPS)
