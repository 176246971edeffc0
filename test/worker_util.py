"""Helpers shared by the worker tests (a real spawned worker, a real store and coordinator)."""

from __future__ import annotations

import json
import os
import time

ROWS = [{"prompt": f"{i} plus one is", "completion": f" {i + 1}"} for i in range(8)]


def submit(store, rows, tenant="default", **hp):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    f = store.create_file("train.jsonl", "fine-tune", data, tenant=tenant)
    job = store.create_job("tiny", f["id"], None, "t", 3,
                           {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, **hp},
                           {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0},
                           None, tenant)
    store.set_status(job["id"], "queued")
    return job["id"]


def adapter_of(store, cfg, job_id) -> dict | None:
    """The tensors of a job's saved adapter, or None until the worker says it saved one."""
    from safetensors.torch import load_file

    from harli_sgl.jobs import ids

    saved = [e for e in store.list_events(job_id, limit=100)[0] if "adapter saved" in e["message"]]
    if not saved:
        return None
    assert saved[0]["data"]["fine_tuned_model"].startswith("ft:tiny:default:t:")
    # The adapter's directory is named for the job (a model name may hold ':' and '/').
    return load_file(os.path.join(cfg.workdir, "adapters", ids.adapter_dir_name(job_id, "t"),
                                  "adapter_model.safetensors"))


def pump(coord, until, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        coord.on_idle(waiting=0)
        if until():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out; coordinator status: {coord.status()}")


def busy_silent_worker(spec, *_shared) -> None:
    """A worker that says hello, then computes without ever heart-beating (starved-looking)."""
    import os

    import zmq

    from harli_sgl.core.message.from_worker import WorkerHello
    from harli_sgl.core.transport import PushQueue

    queue = PushQueue(zmq.Context(), spec.from_worker_addr, bind=False, generation=spec.generation)
    queue.send(WorkerHello(os.getpid(), spec.generation, 0, 0, 0))
    deadline = time.monotonic() + 60
    x = 0
    while time.monotonic() < deadline:
        x += 1
