"""A real spawned finetune worker driven by a real coordinator, without SGLang.

The serving engine is replaced by what it hands the worker: fused weight
tensors in shared memory (built here from the tiny HF model). Jobs come from a
real JobStore; slots are granted by the real coordinator and policies.
"""

from __future__ import annotations

import glob
import os
import time

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor
from harli_sgl.core.shared_weights import fuse
from harli_sgl.core.trainer.checkpoint import read_state
from harli_sgl.jobs import ids
from harli_sgl.jobs.store import JobStore
from harli_sgl.model import byte_model
from harli_sgl.worker.spec import SharedTensors, WorkerSpec
from harli_sgl.worker.supervisor import WorkerSupervisor

from faults import slow_disk
from worker_util import ROWS, pump, submit


@pytest.fixture
def rig(tmp_path):
    yield from make_rig(tmp_path)


def make_rig(tmp_path):
    model_dir = byte_model.ensure("tiny")
    cfg = HarliConfig(mode="idle", workdir=str(tmp_path), restart_backoff_s=0.2,
                      worker_heartbeat_s=0.1, checkpoint_every_steps=2).resolved("cpu")
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    fused = fuse(hf.state_dict(), AutoConfig.from_pretrained(model_dir))
    for t in fused.values():
        t.share_memory_()
    spec = WorkerSpec(0, "", "", 0, cfg, model_path=model_dir, torch_threads=1,
                      server_url="http://127.0.0.1:9")  # nothing listens: publishing waits
    sup = WorkerSupervisor(cfg, spec, shared=SharedTensors(fused))
    predictor = TwoStagePredictor()
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
    job = store.get_job(job_id)
    assert job["status"] == "running"
    # Its rate was measured: an estimated finish, no earlier than the job's creation.
    assert job["estimated_finish"] is not None and job["estimated_finish"] >= job["created_at"]
    # Its results file is stored before it is published, as a file of its tenant.
    pump(coord, lambda: store.list_files("fine-tune-results", tenant="default"))
    results = store.list_files("fine-tune-results", tenant="default")
    assert len(results) == 1 and results[0]["filename"] == "step_metrics.csv"
    rows = store.read_file(results[0]["id"]).decode().splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


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
    """The start-up profile grants synthetic work only, and stage 2 learns from it.

    How many profile iterations land in each stage depends on the host's load, not
    only on the turn order: the worker co-runs in SCHED_IDLE, so on a busy host a
    co-run piece can outlive the bounded stop wait and overlap the next iterations,
    which are then (correctly) measured as concurrent or hybrid rather than alone or
    serial (1 run in 4-5 under load left stage 2 with 10 samples after a fixed 60
    iterations). So the profile runs until both stages have their samples, within a
    bound, and the assertions are about what was sent and what was learned.
    """
    from harli_sgl.core.message.to_worker import CoRunStart, SlotGrant

    coord, store, _ = rig
    pump(coord, lambda: coord.supervisor.ready)
    sent = []
    outbox = coord.supervisor.outbox
    send = outbox.send
    outbox.send = lambda msg: (sent.append(msg), send(msg))[1]
    coord.set_profiling(True)
    f = IterationFeatures(2, 400)
    p = coord.predictor
    iterations, deadline = 0, time.monotonic() + 300
    while iterations < 60 or p.stage1.samples <= 10 or p.stage2.samples <= 10:
        assert iterations < 600 and time.monotonic() < deadline, p.status()
        coord.on_launch(f, time.monotonic())
        time.sleep(0.002)  # "decode"
        coord.after_iteration(f, running=2, waiting=0)
        iterations += 1
    coord.set_profiling(False)
    outbox.send = send
    st = p.status()
    assert st["profiled"] and st["stage1"]["samples"] > 10 and st["stage2"]["samples"] > 10
    # Synthetic work trains nothing a customer owns: every grant and co-run was synthetic.
    grants = [m for m in sent if isinstance(m, SlotGrant)]
    starts = [m for m in sent if isinstance(m, CoRunStart)]
    assert len(grants) >= 10 and all(g.synthetic for g in grants)
    assert {g.budget_units for g in grants} >= {256, 8192}  # the size sweep
    assert starts and all(s.synthetic for s in starts)
    assert coord.metrics.total_trained_tokens == 0
    # Slots were learned to cost time, more for more work: no unit weight is negative
    # (the constrained fit), and the layer units carry cost.
    w = st["stage2"]["weights"]
    assert min(w[1:]) >= 0 and max(w[1:3]) > 0, w
    # The intercept is free: it also absorbs stage 1's error on the serial iteration's
    # decode part, which load makes either sign (-12..+33 ms seen), so the smallest slot
    # may clamp to 0; a slot from the middle of the sweep costs time, a larger one more.
    small = p.slot_cost(SlotWork(256, 512, 0, 2))
    mid = p.slot_cost(SlotWork(1024, 2048, 0, 8))
    large = p.slot_cost(SlotWork(2048, 4096, 0, 16))
    assert 0 <= small <= mid < large and 0 < mid, (small, mid, large, w)
    print(f"profile: {iterations} iterations, stage 1 {st['stage1']['samples']} and stage 2 "
          f"{st['stage2']['samples']} samples, stage 2 weights {w}")


@pytest.fixture
def slow_disk_rig(tmp_path, monkeypatch):
    # Read by the spawned worker: every checkpoint and adapter write waits before its rename.
    slow_disk.worker_env(monkeypatch, 2)
    yield from make_rig(tmp_path)


def test_the_worker_answers_and_trains_while_a_checkpoint_is_written(slow_disk_rig):
    """A slow checkpoint write (issue 12, item 2) neither stalls the worker's message loop
    nor another job; the store names a checkpoint only once its directory is complete."""
    coord, store, cfg = slow_disk_rig
    sup = coord.supervisor
    jobs = [submit(store, ROWS, n_epochs=15), submit(store, ROWS, n_epochs=15)]  # 30 steps each
    pending = os.path.join(cfg.workdir, "checkpoints", "*", ".tmp-*")
    writing: set[str] = set()  # the temporary directories of the writes in flight
    writing_since = 0.0  # when that set was first seen
    tokens_then = None  # trained tokens once it had been in flight for a while
    trained_during_write = 0
    max_loop_age = 0.0
    seen_rows = 0

    def watch() -> bool:
        nonlocal writing, writing_since, tokens_then, trained_during_write, max_loop_age, seen_rows
        now, tokens = time.monotonic(), coord.metrics.total_trained_tokens
        tmp = set(glob.glob(pending))
        if tmp != writing:  # another write: tokens trained between two writes do not count
            writing, writing_since, tokens_then = tmp, now, None
        elif tmp and now - writing_since > 0.5:
            # Past the first half second, a report cannot be one sent before the write began.
            tokens_then = tokens if tokens_then is None else tokens_then
            trained_during_write = max(trained_during_write, tokens - tokens_then)
        if sup.ready:
            max_loop_age = max(max_loop_age, sup._loop_age_s)
        rows = [r for j in jobs for r in store.list_checkpoints(j, limit=100)[0]]
        for r in rows:
            assert read_state(r["path"])["completed_steps"] == r["step_number"]  # complete
        seen_rows = len(rows)
        return all(any("adapter saved" in e["message"] for e in store.list_events(j, limit=100)[0])
                   for j in jobs)

    pump(coord, watch, timeout_s=180)
    assert seen_rows >= 2  # both jobs checkpointed (every 2 steps)
    assert trained_during_write > 0  # slots were granted and trained while a write waited
    assert max_loop_age < 1.0, max_loop_age  # a write on the loop would stall it for 2 s
    print(f"trained during a write: {trained_during_write} tokens; max loop age {max_loop_age:.2f}s; "
          f"{seen_rows} checkpoints")
    assert sup.restarts == 0


def test_one_micro_batch_holds_activations_at_a_time_and_jobs_share_fairly(tmp_path):
    """Saved activations are most of the worker's memory (soak of 2026-11-30): however many
    jobs run, only one micro-batch is between its forward and its backward at a time."""
    from harli_sgl.core.message.to_worker import SlotGrant
    from worker.test_job_prepare import make_executor, tick_until

    ex = make_executor(str(tmp_path))
    try:
        store = ex.store
        jobs = [submit(store, ROWS, n_epochs=3), submit(store, ROWS, n_epochs=3)]
        tick_until(ex, lambda: all(j in ex.running and ex.running[j].trainer is not None
                                   for j in jobs))
        trainers = {j: ex.running[j].trainer for j in jobs}  # kept after a job's trainer closes
        order, slot = [], 0
        while ex.has_work():
            # Budgets of two pieces: slots keep ending inside micro-batches.
            units = 2 * ex.next_piece_units()
            report = ex.run_slot(SlotGrant(slot, budget_units=units, budget_ms=60_000))
            ex.tick()
            slot += 1
            assert sum(t.holds_activations for t in trainers.values()) <= 1
            if order and report.job_id != order[-1]:
                assert not trainers[order[-1]].holds_activations
            order.append(report.job_id)
        switches = sum(a != b for a, b in zip(order, order[1:]))
        assert switches >= 4  # both jobs were served all along, not one after the other
        assert all(t.done for t in trainers.values())
    finally:
        ex.close()


def test_slots_are_shared_between_tenants_first(rig):
    """Tenant A runs 3 jobs and tenant B 1: B's job gets half the slot work, not a quarter.

    Every example has the same length, so a step costs the same in every job and
    the steps each job completes measure its share of the slot work. Counted from
    the moment all four jobs train (they start one by one) until B's job has done
    48 more steps. Tolerance: B's share of those steps is within 0.35..0.65 (the
    ideal is 0.5; sharing per job would give 0.25); steps are whole (an A job
    may be one step short or ahead) and progress reaches the store once a second,
    at ~5 steps a second per job here: over a 12-step window that staleness alone
    moved the share to 0.75 in 1 run of 4 (the worker alternated B, A1, B, A2, ...
    as it should), so the window is long enough that it cannot.
    """
    coord, store, _ = rig
    rows = [{"prompt": "seven plus one is", "completion": " eight"}] * 64
    a = [submit(store, rows, tenant="alpha", n_epochs=12) for _ in range(3)]
    b = submit(store, rows, tenant="beta", n_epochs=12)

    def steps() -> dict[str, int]:
        return {j: store.get_job(j)["progress"]["step"] for j in (*a, b)}

    pump(coord, lambda: min(steps().values()) >= 1, timeout_s=300)
    start = steps()
    pump(coord, lambda: steps()[b] >= start[b] + 48, timeout_s=300)
    done = steps()
    by_b = done[b] - start[b]
    by_a = sum(done[j] - start[j] for j in a)
    share = by_b / (by_a + by_b)
    # On failure, say what each job last did (a stall shows as its last events).
    recent = {j: [e["message"] for e in store.list_events(j, limit=4)[0]] for j in (*a, b)}
    assert 0.35 <= share <= 0.65, (share, start, done, recent,
                                   {"worker restarts": coord.supervisor.restarts})
    assert all(store.get_job(j)["status"] == "running" for j in (*a, b))
