"""The GPU recipe's decisions, applied with the host facts a test passes in (no GPU here)."""

from __future__ import annotations

import os
import subprocess
import sys

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


STANDIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                       "mps_standin")
LAUNCH = """
from harli_sgl.config import HarliConfig
from harli_sgl.core.gpu.driver import DriverCheck
from harli_sgl.core.gpu.host import HostFacts, mps_running
from harli_sgl.platform import gpu_recipe
facts = HostFacts(gpu=True, mps_running=mps_running(), mps_control=True, green_contexts=True,
                  sm_count=132, bf16=True)
gpu_recipe.apply([], HarliConfig(gpu_worker_share=0.5, gpu_start_mps=True),
                 check=DriverCheck(True, "ok"), bf16=True, facts=facts)
assert mps_running()
"""


def launch_and_exit(pipe_dir) -> None:
    """A launcher process that applies the recipe (with --harli-gpu-start-mps) and exits."""
    env = dict(os.environ, PATH=STANDIN + os.pathsep + os.environ["PATH"],
               CUDA_MPS_PIPE_DIRECTORY=str(pipe_dir))
    out = subprocess.run([sys.executable, "-c", LAUNCH], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_daemon_harli_started_is_stopped_when_the_server_exits(tmp_path):
    launch_and_exit(tmp_path)
    assert (tmp_path / "commands").read_text().split() == ["quit"]
    assert not (tmp_path / "control").exists()


def test_a_daemon_the_operator_runs_is_left_running(tmp_path):
    env = dict(os.environ, PATH=STANDIN + os.pathsep + os.environ["PATH"],
               CUDA_MPS_PIPE_DIRECTORY=str(tmp_path))
    subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, check=True)
    launch_and_exit(tmp_path)
    assert not (tmp_path / "commands").exists()  # no quit: not harli's to stop
    assert (tmp_path / "control").exists()
