"""The concurrent arrangement with a real spawned worker and the real coordinator, without SGLang.

Pacing: a co-running worker stops at a piece boundary when asked, and reports
no piece that started after it said it stopped. Results: training in co-run
pieces gives the same adapter as training in serial slots (same seed).
"""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor
from harli_sgl.core.shared_weights import fuse
from harli_sgl.jobs.store import JobStore
from harli_sgl.model import byte_model
from harli_sgl.worker.spec import SharedTensors, WorkerSpec
from harli_sgl.worker.supervisor import WorkerSupervisor

from worker_util import ROWS, adapter_of, pump, submit


def make_rig(workdir: str, mode: str):
    model_dir = byte_model.ensure("tiny")
    cfg = HarliConfig(mode=mode, workdir=workdir, restart_backoff_s=0.2, worker_heartbeat_s=0.1,
                      checkpoint_every_steps=0, cpu_split="auto").resolved("cpu")
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    fused = fuse(hf.state_dict(), AutoConfig.from_pretrained(model_dir))
    for t in fused.values():
        t.share_memory_()
    spec = WorkerSpec(0, "", "", 0, cfg, model_path=model_dir, torch_threads=len(cfg.all_cpus),
                      server_url="http://127.0.0.1:9")  # nothing listens: publishing waits
    sup = WorkerSupervisor(cfg, spec, shared=SharedTensors(fused))
    predictor = TwoStagePredictor()
    coord = SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, sup)
    sup.start()
    return coord, JobStore(cfg.workdir), cfg


@pytest.fixture
def corun_rig(tmp_path):
    coord, store, cfg = make_rig(str(tmp_path / "corun"), "harli")
    yield coord, store, cfg
    coord.shutdown()
    store.close()


def test_a_stop_takes_effect_at_a_piece_boundary(corun_rig):
    coord, store, cfg = corun_rig
    assert coord.corun_share > 0, "this test needs a host with at least two cores"
    submit(store, ROWS * 8, n_epochs=20)
    pump(coord, lambda: coord.supervisor.ready and coord.worker_state.has_work)
    coord._apply(coord.policy.plan(coord_ctx(coord)))  # idle: co-run on every core
    assert coord.corun.active and coord.corun.cpus == cfg.all_cpus
    deadline = time.monotonic() + 60
    while len(coord.corun.pieces) < 5 and time.monotonic() < deadline:
        coord.channel.drain()
        time.sleep(0.01)
    assert len(coord.corun.pieces) >= 5, "no co-run pieces reported"
    coord.corun_control.stop(wait=True)
    coord.wait_for(lambda: coord.corun.stopping is None, 30.0)
    assert coord.corun.stopping is None, "the worker never confirmed the stop"
    stopped_at = coord.corun.stop_latency_ms[-1] / 1000.0
    assert stopped_at >= 0
    last_end = max(p.end for p in coord.corun.pieces)
    time.sleep(0.5)
    coord.channel.drain()
    # Nothing ran after the boundary: the last piece reported is the one before the stop.
    assert max(p.end for p in coord.corun.pieces) == last_end
    assert coord.corun.status()["stop_latency_ms"]["count"] == 1


def coord_ctx(coord):
    from harli_sgl.core.iteration import IterationFeatures
    from harli_sgl.core.policy.base import SlotContext

    return SlotContext(IterationFeatures(0, 0), 0, 0, coord.worker_state.min_piece_units,
                       coord.worker_state.next_pieces, corun_share=coord.corun_share)


def test_co_run_training_gives_the_serial_adapter(tmp_path):
    adapters = {}
    for mode in ("idle", "harli"):
        coord, store, cfg = make_rig(str(tmp_path / mode), mode)
        try:
            job_id = submit(store, ROWS, n_epochs=2)
            pump(coord, lambda: adapter_of(store, cfg, job_id) is not None, timeout_s=300)
            adapters[mode] = adapter_of(store, cfg, job_id)
            if mode == "harli":
                assert coord.corun.pieces, "the harli run did not co-run"
                assert coord.metrics.total_slots == 0, "the harli run used serial slots"
            else:
                assert not coord.corun.pieces and coord.metrics.total_slots > 0
        finally:
            coord.shutdown()
            store.close()
    serial, corun = adapters["idle"], adapters["harli"]
    assert serial.keys() == corun.keys() and serial
    for k in serial:
        torch.testing.assert_close(corun[k], serial[k], rtol=1e-4, atol=1e-6)
