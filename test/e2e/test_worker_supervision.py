"""A finetune-worker crash (kill -9) never affects serving; the worker comes back."""

from __future__ import annotations

import os
import signal
import time

import psutil

from harli_sgl.config import DEFAULT_TPOT_SLO_MS
from e2e_util import generate, status, wait_worker_alive


def test_status_shape(harli_server):
    s = wait_worker_alive(harli_server)
    assert s["mode"] == "harli"
    assert s["tpot_slo_ms"] == DEFAULT_TPOT_SLO_MS["cpu"]
    for key in ("jobs", "finetune_tokens_per_s", "slo_attainment", "pool", "predictor"):
        assert key in s
    proc = psutil.Process(s["worker"]["pid"])
    assert proc.name() == "harli::finetune" or "harli::finetune" in " ".join(proc.cmdline())


def test_kill_9_worker_keeps_serving_and_restarts(harli_server):
    before = wait_worker_alive(harli_server)
    old_pid, old_restarts = before["worker"]["pid"], before["worker"]["restarts"]
    os.kill(old_pid, signal.SIGKILL)

    served_during_outage = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = generate(harli_server, "during the outage", max_new_tokens=4)
        assert out["meta_info"]["completion_tokens"] == 4
        s = status(harli_server)
        if not s["worker"]["alive"]:
            served_during_outage += 1
        elif s["worker"]["pid"] != old_pid:
            break
    else:
        raise AssertionError("the worker did not come back")
    assert served_during_outage >= 1, "no request was served while the worker was down"
    assert s["worker"]["restarts"] >= old_restarts + 1
    assert s["worker"]["last_exit"] == "signal 9"
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
