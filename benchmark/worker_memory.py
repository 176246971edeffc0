"""Where the finetune worker's memory goes: the soak's two jobs, in one process, slot by slot.

    python benchmark/worker_memory.py --slots 600 --every 50               # the soak's jobs
    python benchmark/worker_memory.py --slots 600 --restart-at 300         # and a resume
    python benchmark/worker_memory.py --malloc glibc ...                   # glibc's defaults
    MALLOC_ARENA_MAX=2 python benchmark/worker_memory.py --malloc glibc ...

A real :class:`JobExecutor` over the default model's weights (in shared memory,
as the scheduler hands them over) and a real JobStore, driven as the worker
loop drives it (``run_slot`` then ``tick``), without SGLang or a KV pool. It
trains the soak's two jobs (64 chat rows, and a large upload of 10 long
records) and prints, every ``--every`` slots, the process's memory from
``/proc/self/status`` (RSS, private ``RssAnon``, shared ``RssShmem``), the
number and bytes of live torch tensors, what the jobs have done, and the trained
tokens per second spent in slots (the price of an allocator setting).
``--restart-at N`` closes the executor after slot N and builds a new one, as a
restarted worker does (its jobs resume from their checkpoints): memory the old
one did not give back would show as growth. ``--trim`` asks glibc to return
free heap pages (``malloc_trim``) before each reading, which separates memory
that is in use from memory malloc keeps for reuse. By default the script runs
with the malloc settings a spawned worker gets (``worker/malloc.py``; it
re-executes itself to apply them); ``--malloc glibc`` runs with the environment
as it is.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import tempfile
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from colocation import training_rows  # benchmark/ is on sys.path when run as a script
from harli_sgl.config import HarliConfig
from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.core.shared_weights import fuse
from harli_sgl.model import byte_model
from harli_sgl.worker import malloc
from harli_sgl.worker.executor import JobExecutor
from harli_sgl.worker.spec import WorkerSpec
from soak import big_upload

LIBC = ctypes.CDLL("libc.so.6")


def memory_mb() -> dict[str, float]:
    fields = {"VmRSS": "rss", "RssAnon": "private", "RssShmem": "shared", "VmHWM": "peak"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                out[fields[key]] = round(int(line.split()[1]) / 1024, 1)
    return out


def live_tensors() -> tuple[int, float]:
    """Live tensor objects and the MB of their distinct storages (shared weights included)."""
    seen: dict[int, int] = {}
    count = 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor):
                count += 1
                storage = obj.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
        except Exception:  # e.g. tensors without storage
            continue
    return count, round(sum(seen.values()) / 2**20, 1)


def make_executor(workdir: str, fused: dict, model_dir: str, args) -> JobExecutor:
    cfg = HarliConfig(mode="idle", workdir=workdir,
                      checkpoint_every_steps=args.checkpoint_every_steps).resolved("cpu")
    spec = WorkerSpec(0, "", "", 0, cfg, model_path=model_dir, torch_threads=args.threads,
                      server_url="http://127.0.0.1:9")  # nothing listens: nothing is published
    return JobExecutor(spec, fused)


def submit(store, name: str, data: bytes, epochs: int) -> str:
    f = store.create_file(name, "fine-tune", data)
    job = store.create_job("default", f["id"], None, name.split(".")[0], 0,
                           {"n_epochs": epochs, "batch_size": 4, "learning_rate_multiplier": 1.0},
                           {}, None)
    store.set_status(job["id"], "queued")
    return job["id"]


def report(ex: JobExecutor, slot: int, started: float, args, trained: int = 0,
           busy_s: float = 0.0) -> dict:
    if args.trim:
        LIBC.malloc_trim(0)
    gc.collect()
    tensors, tensor_mb = live_tensors()
    jobs = {j.name.rsplit(":", 1)[-1]: (j.trainer.completed_steps if j.trainer else
                                       "preparing" if j.preparing else "done")
            for j in ex.running.values()}
    row = {"slot": slot, "t_s": round(time.monotonic() - started, 1), **memory_mb(),
           "tensors": tensors, "tensor_mb": tensor_mb, "jobs": jobs,
           "trained_tokens_per_busy_s": round(trained / busy_s) if busy_s else 0}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=600)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--budget-ms", type=float, default=50.0)
    p.add_argument("--big-upload-mb", type=float, default=50.0)
    p.add_argument("--checkpoint-every-steps", type=int, default=25)
    p.add_argument("--restart-at", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trim", action="store_true")
    p.add_argument("--out", default="")
    p.add_argument("--malloc", choices=("worker", "glibc"), default="worker")
    args = p.parse_args()
    if args.malloc == "worker" and any(os.environ.get(k) != v for k, v in malloc.ENV.items()):
        # glibc reads these when the process starts, as in a spawned worker.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **malloc.ENV})

    model_dir = byte_model.ensure()
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    fused = fuse(hf.state_dict(), AutoConfig.from_pretrained(model_dir))
    for t in fused.values():
        t.share_memory_()
    del hf
    gc.collect()
    workdir = tempfile.mkdtemp(prefix="harli-worker-memory-")
    rows = [{"event": "start", **memory_mb()}]
    print(json.dumps(rows[0]), flush=True)
    ex = make_executor(workdir, fused, model_dir, args)
    small = "".join(json.dumps(r) + "\n" for r in training_rows(64)).encode()
    submit(ex.store, "small.jsonl", small, 50)
    submit(ex.store, "big.jsonl", big_upload(args.big_upload_mb), 50)
    started = time.monotonic()
    while not all(j.trainer is not None for j in ex.running.values()) or len(ex.running) < 2:
        ex.tick()
        time.sleep(0.05)
    rows.append({"event": "prepared", **report(ex, 0, started, args)})
    trained, busy_s = 0, 0.0
    for slot in range(1, args.slots + 1):
        t0 = time.perf_counter()
        r = ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=args.budget_ms))
        busy_s += time.perf_counter() - t0
        trained += r.trained_tokens
        ex.tick()
        if slot % args.every == 0:
            rows.append({**report(ex, slot, started, args, trained, busy_s)})
        if slot == args.restart_at:
            ex.close()
            del ex
            gc.collect()
            rows.append({"event": "closed", **report_closed(started)})
            ex = make_executor(workdir, fused, model_dir, args)
            while len(ex.running) < 2 or not all(j.trainer is not None for j in ex.running.values()):
                ex.tick()
                time.sleep(0.05)
            rows.append({"event": "resumed", **report(ex, slot, started, args)})
    ex.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"argv": sys.argv, "malloc_env": {k: v for k, v in os.environ.items()
                                                        if k.startswith("MALLOC_")},
                       "rows": rows}, f, indent=1)


def report_closed(started: float) -> dict:
    tensors, tensor_mb = live_tensors()
    row = {"t_s": round(time.monotonic() - started, 1), **memory_mb(), "tensors": tensors,
           "tensor_mb": tensor_mb}
    print(json.dumps({"event": "closed", **row}), flush=True)
    return row


if __name__ == "__main__":
    main()
