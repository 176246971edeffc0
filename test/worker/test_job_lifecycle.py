"""A job's life across a worker crash: killed mid-job, resumed, and the same adapter.

The trainer-level test proves that resuming a checkpoint gives the uninterrupted
weights (test/core/trainer). This one proves the whole path the product takes:
a real spawned worker is SIGKILLed while a job trains, the supervisor restarts
it, the job lifecycle finds the job's last checkpoint in the store and resumes
there, and the adapter it saves equals that of a job with the same seed that no
crash interrupted.
"""

from __future__ import annotations

import glob
import os
import signal
import time

import torch

from harli_sgl.jobs import ids
from worker.test_executor import make_rig
from worker_util import ROWS, adapter_of, pump, submit

# 32 rows / batch 4 x 8 epochs = 64 steps, a checkpoint every 2.
DATA = ROWS * 4
EPOCHS = 8
STEPS = len(DATA) // 4 * EPOCHS


def crash_after_first_checkpoint(coord, store, cfg, job_id) -> int:
    """SIGKILL the worker once a checkpoint is on disk and in the store; returns the pid.

    The rig's mode (idle) trains only in the slots ``pump`` grants, so the job stands
    still once the pump stops. The worker records checkpoints in the store when it
    flushes (every second, on its own), so waiting for the row without granting
    slots crashes the job at a point that does not depend on the host's speed.
    """
    on_disk = os.path.join(cfg.workdir, "checkpoints", "*", "step-*[0-9]")
    pump(coord, lambda: glob.glob(on_disk))
    deadline = time.monotonic() + 60
    while not store.list_checkpoints(job_id)[0]:
        assert time.monotonic() < deadline, "the worker never recorded its checkpoint"
        time.sleep(0.05)
    killed = coord.supervisor.pid
    os.kill(killed, signal.SIGKILL)
    return killed


def plant_interrupted_writes(workdir: str, job_id: str) -> dict[str, bool]:
    """What a SIGKILL mid-write leaves (issue 19, item 12), and whether each must be swept."""
    job_checkpoints = os.path.join(workdir, "checkpoints", job_id)
    adapters = os.path.join(workdir, "adapters")
    planted = {os.path.join(job_checkpoints, ".tmp-step-000099-killed01"): True,
               os.path.join(adapters, f".tmp-{ids.adapter_dir_name(job_id, 't')}-killed02"): True,
               # another job's write in flight: not this job's to sweep
               os.path.join(adapters, ".tmp-ft-t-000000000000-other003"): False}
    for path in planted:
        os.makedirs(path)
        open(os.path.join(path, "adapter_model.safetensors"), "w").close()
    return planted


def test_a_job_resumed_after_a_worker_crash_gives_the_uninterrupted_adapter(tmp_path):
    adapters = {}
    for run in ("crashed", "straight"):
        rig = make_rig(tmp_path / run)
        coord, store, cfg = next(rig)
        try:
            job_id = submit(store, DATA, n_epochs=EPOCHS)  # the same seed (3) in both runs
            sup = coord.supervisor
            if run == "crashed":
                killed = crash_after_first_checkpoint(coord, store, cfg, job_id)
                planted = plant_interrupted_writes(cfg.workdir, job_id)
            pump(coord, lambda: adapter_of(store, cfg, job_id) is not None, timeout_s=300)
            adapters[run] = adapter_of(store, cfg, job_id)
            events = [e["message"] for e in store.list_events(job_id, limit=200)[0]]
            resumed = [m for m in events if m.startswith("resumed from the checkpoint at step")]
            if run == "crashed":
                assert sup.restarts == 1 and sup.pid != killed
                assert len(resumed) == 1, events  # it went on from a checkpoint, not from step 0
                assert 2 <= int(resumed[0].split()[-1]) < STEPS, resumed
                for path, swept in planted.items():
                    assert os.path.exists(path) != swept, (path, swept)
            else:
                assert sup.restarts == 0 and not resumed
        finally:
            next(rig, None)  # the rig's own teardown: coordinator and store closed
    straight, crashed = adapters["straight"], adapters["crashed"]
    assert straight.keys() == crashed.keys() and straight
    changed = False
    for name in straight:
        torch.testing.assert_close(crashed[name], straight[name], rtol=1e-5, atol=1e-7)
        changed |= bool(straight[name].abs().sum() > 0)
    assert changed  # the adapter trained (LoRA's B starts at zero)


def test_a_dpo_job_trains_in_slots_with_dpo_metrics(tmp_path):
    """In process: a stored DPO job is prepared as pairs, trained by DpoJobTrainer in slots."""
    import json

    from harli_sgl.core.message.to_worker import SlotGrant
    from harli_sgl.core.trainer.dpo_job import DpoJobTrainer
    from worker.test_job_prepare import make_executor, tick_until

    rows = [{"input": {"messages": [{"role": "user", "content": f"{i} plus one?"}]},
             "preferred_output": [{"role": "assistant", "content": f"{i + 1}"}],
             "non_preferred_output": [{"role": "assistant", "content": f"{i + 2}"}]}
            for i in range(8)]
    ex = make_executor(str(tmp_path))
    try:
        store = ex.store
        f = store.create_file("prefs.jsonl", "fine-tune",
                              "".join(json.dumps(r) + "\n" for r in rows).encode())
        job_id = store.create_job("tiny", f["id"], None, "t", 3,
                                  {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0,
                                   "beta": 0.2},
                                  {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                                   "dropout": 0.0}, None)["id"]
        store.set_status(job_id, "queued")
        tick_until(ex, lambda: job_id in ex.running and ex.running[job_id].trainer is not None)
        trainer = ex.running[job_id].trainer
        assert isinstance(trainer, DpoJobTrainer) and trainer._chunked.beta == 0.2
        assert len(trainer.examples) == 8 and trainer.total_steps == 2
        # A pair is two sequences: the worker's micro-batch rows hold half as many pairs.
        assert trainer.config.micro_batch_size == max(1, min(4, ex.config.micro_batch_size // 2))
        slot = 0
        while ex.has_work():
            ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=60_000))
            ex.tick()
            slot += 1
        tick_until(ex, lambda: ex.running[job_id].adapter_path is not None)
        metrics = [e["data"] for e in store.list_events(job_id, limit=100)[0]
                   if e["type"] == "metrics"]
        assert len(metrics) == 2
        assert all("train_reward_margin" in m and "train_loss" in m for m in metrics)
    finally:
        ex.close()
