"""Unified pool benchmark: how much larger a micro-batch fits, and how fast reclaims are.

    python benchmark/pool_memory.py --out out/pool

``--model`` picks the model (default: the embedded SmolLM2).

Part A, capacity. Each trial is a fresh process that does what the finetune
worker does: the embedded default model's serving weights in shared memory, a
KV pool of the server's default size (16384 tokens) in shared memory, and one
layer-chunked LoRA training step of a micro-batch of ``T`` tokens. The
process's *private* memory is capped with ``RLIMIT_DATA`` (shared mappings,
i.e. the weights and the KV pool, are not counted against it, exactly as on
the server). With the pool, 75% of the KV pages are leased to the trainer and
saved activations go there; without it, they stay private. A binary search
finds the largest ``T`` that trains under the cap, and every trial reports
its peak private memory (anonymous RSS, sampled after every piece).

Part B, reclaim latency. A real harli_sgl server with a 4096-token KV pool
and a running finetune job (so most free pages are leased) receives bursts
of ``sglang.bench_serving`` requests that need those pages; reclaim latency
p50/p99 and the reclaim count are read from ``/harli/status``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import time

from harli_sgl.tools import bench_model

SEQ_LEN = 128
MODEL: bench_model.BenchModel  # set by main() from --model


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` size in bytes (``RssAnon``: resident private memory;
    ``VmData``: what ``RLIMIT_DATA`` limits)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def anon_bytes() -> int:
    return proc_status("RssAnon")


def trial(tokens: int, pooled: bool, cap_mb: int, path: str) -> dict:
    """One training step in this process (called in a subprocess) on the model at ``path``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harli_sgl.core.pool.arena import LeasedArena
    from harli_sgl.core.shared_weights import build_model, fuse
    from harli_sgl.core.trainer.chunked import ChunkedTrainer
    from harli_sgl.core.trainer.data import MicroBatch

    torch.set_num_threads(2)
    cfg = AutoConfig.from_pretrained(path)
    fused = fuse(AutoModelForCausalLM.from_pretrained(path).state_dict(), cfg)
    for t in fused.values():
        t.share_memory_()
    pool_tokens, kv_heads = 16384, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    buffers = [torch.zeros(pool_tokens + 1, kv_heads, head_dim).share_memory_()
               for _ in range(2 * cfg.num_hidden_layers)]
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_model(cfg, fused), LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"]))
    hooks = None
    if pooled:
        arena = LeasedArena(buffers, 1, exclude=list(fused.values()))
        arena.add_lease(1, ((pool_tokens // 4 + 1, pool_tokens + 1),))  # 75% of the pages
        hooks = arena.hooks()
    params = [p for p in model.parameters() if p.requires_grad]
    trainer = ChunkedTrainer(model, torch.optim.AdamW(params, lr=1e-4), saved_tensors_hooks=hooks)
    ids = torch.randint(0, cfg.vocab_size, (tokens // SEQ_LEN, SEQ_LEN))
    batch = MicroBatch(ids, torch.ones_like(ids), ids.clone())
    # Loading the HF model and fusing it into shared memory freed ~100 MB of private
    # heap that glibc keeps; give it back first, or activations would reuse it
    # unseen (no RSS growth) and the cap would not mean "cap_mb more".
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = anon_bytes()
    resource.setrlimit(resource.RLIMIT_DATA,
                       (proc_status("VmData") + cap_mb * 2**20, resource.RLIM_INFINITY))
    peak = baseline
    trainer.start_step([batch])
    while not trainer.idle:
        trainer.run(trainer.min_piece_units)
        peak = max(peak, anon_bytes())
    return {"tokens": tokens, "pooled": pooled, "peak_private_mb": (peak - baseline) / 2**20}


def run_trial(tokens: int, pooled: bool, cap_mb: int) -> dict | None:
    cmd = [sys.executable, __file__, "--trial", str(tokens), str(int(pooled)), str(cap_mb),
           MODEL.path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest(pooled: bool, cap_mb: int, limit: int) -> tuple[int, dict | None]:
    lo, hi, best = 0, limit // SEQ_LEN, None  # in sequences
    while lo < hi:
        mid = (lo + hi + 1) // 2
        result = run_trial(mid * SEQ_LEN, pooled, cap_mb)
        print(json.dumps({"trial": mid * SEQ_LEN, "pooled": pooled, "ok": result is not None,
                          **(result or {})}), flush=True)
        if result is not None:
            lo, best = mid, result
        else:
            hi = mid - 1
    return lo * SEQ_LEN, best


def reclaim_latency(out: str, bursts: int) -> dict:
    import requests

    from harli_sgl.tools.bench_client import BenchLoad, failed_requests, run_bench_serving
    from harli_sgl.tools.server_process import ServerProcess

    server = ServerProcess(["--max-total-tokens", "4096", "--harli-workdir", os.path.join(out, "workdir"),
                            "--harli-startup-profile-s", "0", *MODEL.server_flags()],
                           log_path=os.path.join(out, "server.log"))
    server.start().wait_ready()
    try:
        from harli_sgl.demo.__main__ import DATA

        data = open(DATA, "rb").read()
        f = requests.post(server.base_url + "/v1/files", files={"file": ("d.jsonl", data)},
                          data={"purpose": "fine-tune"}).json()
        requests.post(server.base_url + "/v1/fine_tuning/jobs", json={
            "model": MODEL.served_name, "training_file": f["id"],
            "hyperparameters": {"n_epochs": 50, "batch_size": 8}})
        status = lambda: requests.get(server.base_url + "/harli/status").json()  # noqa: E731
        peaks, failed = [], 0
        for burst in range(bursts):
            # Cached prefixes hold pages too (only free pages are lent), and each burst
            # sends new prompts, so every burst needs pages the worker holds.
            requests.post(server.base_url + "/flush_cache", timeout=60)
            deadline = time.monotonic() + 120
            while status()["pool"]["leased_tokens"] < 1024 and time.monotonic() < deadline:
                time.sleep(0.5)
            peaks.append(status()["pool"]["leased_tokens"])
            load = BenchLoad(num_prompts=12, input_len=256, output_len=32, seed=burst + 1)
            result = run_bench_serving(server.base_url, MODEL.path, load)
            failed += failed_requests(result) + load.num_prompts - result["completed"]
        pool = status()["pool"]
        pool["leased_tokens_before_bursts"] = peaks
        pool["failed_requests"] = failed
        with open(os.path.join(out, "server.log")) as f:
            pool["retraction_log_lines"] = sum("retract" in line.lower() and "server_args" not in line
                                               for line in f)
        return pool
    finally:
        server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--trial":
        print(json.dumps(trial(int(sys.argv[2]), bool(int(sys.argv[3])), int(sys.argv[4]),
                               sys.argv[5])))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cap-mb", type=int, default=256, help="private memory cap per trial")
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--bursts", type=int, default=5)
    p.add_argument("--reuse-capacity", action="store_true",
                   help="reuse DIR/capacity.json from an earlier run; only measure reclaims")
    p.add_argument("--model", choices=bench_model.CHOICES, default="smollm2",
                   help="the served and trained model (default: the embedded SmolLM2)")
    args = p.parse_args()
    global MODEL
    MODEL = bench_model.resolve(args.model)
    os.makedirs(args.out, exist_ok=True)
    result = {"cap_mb": args.cap_mb, "seq_len": SEQ_LEN, "model": args.model}
    capacity = os.path.join(args.out, "capacity.json")
    if args.reuse_capacity and os.path.exists(capacity):
        result = json.load(open(capacity))
        result["reclaim"] = reclaim_latency(args.out, args.bursts)
        with open(os.path.join(args.out, "pool.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        return
    for pooled in (False, True):
        tokens, best = largest(pooled, args.cap_mb, args.max_tokens)
        result["with_pool" if pooled else "without_pool"] = {"largest_micro_batch_tokens": tokens,
                                                             "at_largest": best}
    # Peak private memory of the same micro-batch with and without the pool.
    same = result["without_pool"]["largest_micro_batch_tokens"]
    if same:
        result["same_micro_batch"] = {
            "tokens": same,
            "without_pool_peak_private_mb": run_trial(same, False, 1 << 16)["peak_private_mb"],
            "with_pool_peak_private_mb": run_trial(same, True, 1 << 16)["peak_private_mb"],
        }
    with open(capacity, "w") as f:
        json.dump(result, f, indent=2)
    result["reclaim"] = reclaim_latency(args.out, args.bursts)
    with open(os.path.join(args.out, "pool.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
