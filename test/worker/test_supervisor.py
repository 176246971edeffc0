"""The supervisor against a real spawned worker process (no SGLang needed)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time

import psutil

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor
from harli_sgl.worker.supervisor import WorkerSupervisor

from worker_util import pump


def make_coordinator(cfg: HarliConfig, sup: WorkerSupervisor) -> SlotCoordinator:
    predictor = TwoStagePredictor()
    return SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, sup)


FAST_LIVENESS = HarliConfig(mode="idle", restart_backoff_s=0.1, worker_heartbeat_s=0.1,
                            worker_heartbeat_timeout_s=1.0)


@contextlib.contextmanager
def supervised(cfg: HarliConfig = FAST_LIVENESS, target=None):
    """A started supervisor with its coordinator, shut down on exit."""
    sup = WorkerSupervisor(cfg, target=target)
    coord = make_coordinator(cfg, sup)
    sup.start()
    try:
        yield sup, coord
    finally:
        coord.shutdown()


def test_spawn_hello_kill9_restart_and_clean_shutdown():
    cfg = HarliConfig(mode="idle", restart_backoff_s=0.2, worker_heartbeat_s=0.1)
    sup = WorkerSupervisor(cfg)
    coord = make_coordinator(cfg, sup)
    sup.start()
    try:
        pump(coord, lambda: sup.ready)
        pid = sup.pid
        proc = psutil.Process(pid)
        assert "harli::finetune" in (proc.name() + " ".join(proc.cmdline()))
        assert proc.ppid() == os.getpid()

        os.kill(pid, signal.SIGKILL)
        pump(coord, lambda: sup.restarts == 1)
        assert sup.status()["last_exit"] == "signal 9"
        assert not sup.ready
        pump(coord, lambda: sup.ready and sup.pid != pid)
        assert sup.generation == 2
    finally:
        last = sup.pid
        coord.shutdown()
    assert not psutil.pid_exists(last) or psutil.Process(last).status() == psutil.STATUS_ZOMBIE


def test_backoff_doubles_per_crash_up_to_the_cap():
    cfg = HarliConfig(mode="idle", restart_backoff_s=0.1, restart_backoff_max_s=0.25)
    sup = WorkerSupervisor(cfg)
    coord = make_coordinator(cfg, sup)
    sup.start()
    try:
        delays = []
        for _ in range(3):
            pump(coord, lambda: sup.ready)
            before = sup.restarts
            os.kill(sup.pid, signal.SIGKILL)
            pump(coord, lambda: sup.restarts == before + 1)
            delays.append(sup._restart_at - time.monotonic())
        # 0.1, 0.2, then capped at 0.25 (measured a little after each death).
        assert delays[0] < delays[1] <= 0.25 + 1e-6
        assert delays[2] <= 0.25 + 1e-6
    finally:
        coord.shutdown()


def test_hung_worker_is_killed_and_restarted():
    with supervised() as (sup, coord):
        pump(coord, lambda: sup.ready)
        pid = sup.pid
        os.kill(pid, signal.SIGSTOP)  # alive but silent: a hang
        pump(coord, lambda: sup.restarts == 1, timeout_s=30)
        assert sup.status()["last_exit"] == "signal 9"
        pump(coord, lambda: sup.ready and sup.pid != pid)


def test_heartbeats_queued_behind_a_long_iteration_are_not_silence():
    with supervised() as (sup, coord):
        pump(coord, lambda: sup.ready)
        time.sleep(3.0)  # the scheduler is busy with a long iteration; heartbeats queue up
        for _ in range(20):
            coord.on_idle(waiting=0)
            time.sleep(0.02)
        assert sup.restarts == 0, sup.status()


def test_a_silent_worker_that_computes_is_not_killed_as_hung():
    from worker_util import busy_silent_worker

    with supervised(target=busy_silent_worker) as (sup, coord):
        pump(coord, lambda: sup.ready, timeout_s=60)
        pump(coord, lambda: sup.busy_not_hung >= 2, timeout_s=30)
        assert sup.restarts == 0 and sup.ready


def test_a_stuck_message_loop_is_hung_even_with_heartbeats():
    from harli_sgl.core.message.from_worker import Heartbeat

    with supervised() as (sup, coord):
        pump(coord, lambda: sup.ready)
        sup.on_heartbeat(Heartbeat(time.time(), loop_age_s=301.0))  # the loop has not turned in 5 min
        sup.check()
        pump(coord, lambda: sup.restarts == 1, timeout_s=30)
        assert sup.status()["last_exit"] == "signal 9"


def test_the_mps_thread_cap_is_set_only_under_a_fixed_mps_share():
    from harli_sgl.worker.supervisor import worker_env

    gpu = dataclasses.replace(HarliConfig(gpu_worker_share=0.5), device="cuda")
    assert worker_env(gpu, "mps_fixed")["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    for means in ("mps_green", "serial"):  # green: uncapped; no MPS: it would do nothing
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in worker_env(gpu, means)
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in worker_env(HarliConfig(gpu_worker_share=0.5),
                                                                 "mps_fixed")
