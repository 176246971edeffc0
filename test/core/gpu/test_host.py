"""Starting and stopping the CUDA MPS control daemon, against a stand-in for NVIDIA's tool
(test/data/mps_standin): the same command line and stdin exchange, no GPU."""

from __future__ import annotations

import os

import pytest

from harli_sgl.core.gpu.host import mps_running, start_mps, stop_mps

STANDIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "data", "mps_standin")


@pytest.fixture
def pipe_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", STANDIN + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    return tmp_path


def test_a_started_daemon_answers_and_quits_when_asked(pipe_dir):
    assert not mps_running()
    assert start_mps() and mps_running()
    assert stop_mps() and not mps_running()
    assert (pipe_dir / "commands").read_text().split() == ["quit"]


def test_stopping_without_a_daemon_or_without_the_tool_says_so(pipe_dir, monkeypatch):
    assert not stop_mps(timeout_s=2)  # the tool answers "Cannot find MPS control daemon"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not stop_mps(timeout_s=2)
