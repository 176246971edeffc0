"""A real spawned finetune worker driven by a real coordinator, without SGLang.

The serving engine is replaced by what it hands the worker: fused weight
tensors in shared memory (built here from the tiny HF model). Jobs come from a
real JobStore; slots are granted by the real coordinator and policies.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.registry import make_predictor
from harli_sgl.core.shared_weights import fuse
from harli_sgl.jobs import ids
from harli_sgl.jobs.store import JobStore
from harli_sgl.model import default_model
from harli_sgl.worker.spec import WorkerSpec
from harli_sgl.worker.supervisor import WorkerSupervisor

from worker_util import ROWS, pump, submit


@pytest.fixture
def rig(tmp_path):
    model_dir = default_model.ensure("tiny")
    cfg = HarliConfig(mode="idle", workdir=str(tmp_path), restart_backoff_s=0.2,
                      worker_heartbeat_s=0.1, checkpoint_every_steps=2).resolved("cpu")
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    fused = fuse(hf.state_dict(), AutoConfig.from_pretrained(model_dir))
    for t in fused.values():
        t.share_memory_()
    spec = WorkerSpec(0, "", "", 0, cfg, model_path=model_dir, torch_threads=1,
                      server_url="http://127.0.0.1:9")  # nothing listens: publishing waits
    sup = WorkerSupervisor(cfg, spec, extra_args=(fused,))
    predictor = make_predictor()
    coord = SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, sup)
    sup.start()
    store = JobStore(cfg.workdir)
    yield coord, store, cfg
    coord.shutdown()
    store.close()


def test_job_trains_in_idle_slots_and_saves_its_adapter(rig):
    coord, store, cfg = rig
    job_id = submit(store, ROWS)
    name = None

    def adapter_saved():
        nonlocal name
        events = store.list_events(job_id, limit=100)[0]
        saved = [e for e in events if "adapter saved" in e["message"]]
        if saved:
            name = saved[0]["data"]["fine_tuned_model"]
        return bool(saved)

    pump(coord, adapter_saved)
    assert name == ids.fine_tuned_model_name(job_id, "t", "tiny", "default")
    assert os.path.exists(os.path.join(cfg.workdir, "adapters", ids.adapter_dir_name(job_id, "t"),
                                       "adapter_config.json"))
    metrics = [e for e in store.list_events(job_id, limit=100)[0] if e["type"] == "metrics"]
    assert len(metrics) == 4  # 8 examples / batch 4 x 2 epochs
    assert coord.metrics.total_trained_tokens > 0
    assert store.list_checkpoints(job_id)[0]  # every 2 steps
    # Not servable yet (no server to publish to), so not "succeeded".
    assert store.get_job(job_id)["status"] == "running"


def test_bad_job_fails_precisely_and_the_next_one_runs(rig):
    coord, store, _ = rig
    bad = submit(store, ROWS[:2] + [{"prompt": "x" * 4000, "completion": "y"}])
    good = submit(store, ROWS)
    pump(coord, lambda: store.get_job(bad)["status"] == "failed")
    assert "line 3" in store.get_job(bad)["error"]["message"]
    pump(coord, lambda: any("adapter saved" in e["message"]
                            for e in store.list_events(good, limit=100)[0]))
    assert coord.supervisor.restarts == 0


def test_profile_slots_are_synthetic_and_teach_stage_two(rig):
    coord, store, _ = rig
    pump(coord, lambda: coord.supervisor.ready)
    coord.set_profiling(True)
    f = IterationFeatures(2, 400)
    for _ in range(60):
        coord.on_launch(f, time.monotonic())
        time.sleep(0.002)  # "decode"
        coord.after_iteration(f, running=2, waiting=0)
    coord.set_profiling(False)
    p = coord.predictor.status()
    assert p["profiled"] and p["stage1"]["samples"] > 10 and p["stage2"]["samples"] > 10
    # Synthetic work trains nothing a customer owns.
    assert coord.metrics.total_trained_tokens == 0
    # Slots were learned to cost time, more for more work.
    small = coord.predictor.slot_cost(SlotWork(256, 512, 0, 2))
    large = coord.predictor.slot_cost(SlotWork(2048, 4096, 0, 16))
    assert 0 < small < large


def test_slots_are_shared_between_tenants_first(rig):
    """Tenant A runs 3 jobs and tenant B 1: B's job gets half the slot work, not a quarter.

    Every example has the same length, so a step costs the same in every job and
    the steps each job completes measure its share of the slot work. Counted from
    the moment all four jobs train (they start one by one) until B's job has done
    12 more steps. Tolerance: B's share of those steps is within 0.35..0.65 (the
    ideal is 0.5; sharing per job would give 0.25); steps are whole (an A job
    may be one step short or ahead) and progress reaches the store once a second.
    """
    coord, store, _ = rig
    rows = [{"prompt": "seven plus one is", "completion": " eight"}] * 64
    a = [submit(store, rows, tenant="alpha", n_epochs=4) for _ in range(3)]
    b = submit(store, rows, tenant="beta", n_epochs=4)

    def steps() -> dict[str, int]:
        return {j: store.get_job(j)["progress"]["step"] for j in (*a, b)}

    pump(coord, lambda: min(steps().values()) >= 1, timeout_s=300)
    start = steps()
    pump(coord, lambda: steps()[b] >= start[b] + 12, timeout_s=300)
    done = steps()
    by_b = done[b] - start[b]
    by_a = sum(done[j] - start[j] for j in a)
    share = by_b / (by_a + by_b)
    assert 0.35 <= share <= 0.65, (share, start, done)
    assert all(store.get_job(j)["status"] == "running" for j in (*a, b))
