"""GPU probe: how much does training beside decode slow it, and how much does it train?

    python benchmark/gpu_probe.py --out gpu_probe.json                 # one H100/H200, <= 8 min
    python benchmark/gpu_probe.py --out /tmp/p.json --tiny --device cpu  # smoke run on a CPU host

For the day a GPU is lent (the lent machine has torch, transformers and peft, no
sglang): an HF decode loop of an 8B-shaped Llama (random bf16 weights) runs at
batch sizes 1..64 in this process, and the engine-agnostic layer-chunked
trainer (``harli_sgl.core.trainer``, PEFT LoRA) runs beside it in a second
process on the *same* weights (CUDA IPC, as the worker does), piece after
piece. For each worker SM share it measures decode step latency alone and
beside training (CUDA events on GPU), and the trainer's tokens/s beside decode
and alone, and writes them to JSON.

SM shares use CUDA MPS: the trainer process is started with
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` when an MPS control daemon runs (the
probe tries to start one). Without MPS the two processes time-slice the GPU
and the probe says so in the JSON (``"partition": "timesliced"``) instead of
pretending a share. It also records harli's start-up decisions on the host
(driver check, co-running means, whether a green context can be made in an MPS
client) and a lent-page ordering check on the device (``host`` and ``fences``).

Not yet measured here (issue 22, item 8): CUDA graphs for the decode stand-in,
stage-1/stage-2 MAPE, and slot-deadline accuracy on device time. UNTESTED on a
GPU: no session has been lent one yet; only the ``--tiny --device cpu`` smoke
path has run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
import types

import torch
import torch.multiprocessing as mp

from harli_sgl.core.shared_weights import build_model, fuse


def llama_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048)
    # Llama-3-8B's shape.
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0)


def random_fused(cfg, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    fused = fuse(model.state_dict(), cfg)
    del model
    return fused


class Timer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.b.record()
            self.b.synchronize()
            self.ms = self.a.elapsed_time(self.b)
        else:
            self.ms = (time.perf_counter() - self.t) * 1000.0


@torch.no_grad()
def decode_steps_ms(model, batch: int, context: int, steps: int, device: str) -> list[float]:
    from transformers import DynamicCache

    ids = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    nxt = out.logits[:, -1:].argmax(-1)
    times = []
    for _ in range(steps):
        with Timer(device) as t:
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
        times.append(t.ms)
    return times


def trainer_main(cfg, fused, device: str, ready, go, stop, counter, seq_len: int,
                 micro_batch: int) -> None:
    """Child process: train LoRA in layer-chunked pieces whenever ``go`` is set."""
    from harli_sgl.core.trainer.config import TrainConfig
    from harli_sgl.core.trainer.data import Example
    from harli_sgl.core.trainer.job_trainer import JobTrainer

    torch.manual_seed(1)
    rows = torch.randint(0, cfg.vocab_size, (micro_batch * 64, seq_len)).tolist()
    examples = [Example(r, r) for r in rows]
    tokenizer = types.SimpleNamespace(pad_token_id=0, eos_token_id=0)  # pad id is all it reads
    tc = TrainConfig(n_epochs=50, batch_size=micro_batch, micro_batch_size=micro_batch,
                     learning_rate=1e-4, lora_r=16, lora_alpha=32,
                     target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                     "down_proj"), seed=0, max_seq_len=seq_len)
    trainer = JobTrainer(build_model(cfg, fused), tokenizer, examples, tc)
    ready.set()
    while not stop.is_set():
        if not go.wait(0.05):
            continue
        r = trainer.run(trainer.min_piece_units)  # one piece: stop and go act within a piece
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        with counter.get_lock():
            counter.value += r.trained_tokens


def mps_available() -> bool:
    if shutil.which("nvidia-cuda-mps-control") is None:
        return False
    subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True)
    probe = subprocess.run(["sh", "-c", "echo get_server_list | nvidia-cuda-mps-control"],
                           capture_output=True, text=True)
    return probe.returncode == 0


def host_checks(device: str) -> dict:
    """The start-up decisions harli makes on this host (core/gpu), as the server would."""
    from harli_sgl.core.gpu import corun_means, driver
    from harli_sgl.core.gpu.host import read_host

    gpu = device.startswith("cuda")
    facts = read_host(gpu)
    # As the server would decide for --harli-gpu-worker-share 0.5 (a CPU host: its split).
    out = {"facts": facts.__dict__,
           "corun_means": corun_means.decide(facts, 0.5, may_start_mps=False).status()}
    if gpu:
        check = driver.read_and_check()
        out["driver"] = {"ok": check.ok, "message": check.message}
        try:  # does a green context hold in this (MPS client) process?
            torch.cuda.GreenContext(num_sms=max(8, facts.sm_count // 2 // 8 * 8))
            out["green_context"] = "created"
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out["green_context"] = f"failed: {e}"
    return out


def fence_checks(device: str) -> dict:
    """Lent-page ordering on this device: a grant is held while the engine's work runs."""
    from harli_sgl.core.gpu.fence import PendingGrants, device_for

    gpu = device.startswith("cuda")
    dev = device_for("cuda" if gpu else "cpu")
    n = 4096 if gpu else 128
    a = torch.randn(n, n, device=device)
    grants = PendingGrants(dev)
    for _ in range(20):  # the "engine's" kernels on the pages
        a = a @ a / n ** 0.5
    grants.lend(1, "grant")
    first = grants.ready()  # a GPU: still queued, so held; the CPU: done, so released
    dev.sync()
    return {"held_while_engine_ran": first == [],
            "released_after_fence": first + grants.ready() == ["grant"],
            "synchronous_device": dev.synchronous}


def trained_rate(counter, go, seconds: float) -> float:
    start = counter.value
    go.set()
    time.sleep(seconds)
    go.clear()
    return (counter.value - start) / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="2-layer model (smoke runs)")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--shares", default="0.25,0.5,0.75")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=450.0, help="stop measuring after this long")
    args = p.parse_args()
    t_start = time.monotonic()
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = llama_config(args.tiny)
    partition = "mps" if device.startswith("cuda") and mps_available() else "timesliced"
    shares = [float(s) for s in args.shares.split(",")] if partition == "mps" else [1.0]
    fused = random_fused(cfg, device, dtype)
    model = build_model(cfg, fused).eval()
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
              "model": "tiny" if args.tiny else "llama-8b-shape", "dtype": str(dtype),
              "partition": partition, "context": args.context,
              "host": host_checks(device), "fences": fence_checks(device), "rows": []}
    ctx = mp.get_context("spawn")
    for share in shares:
        env_before = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
        if partition == "mps":
            os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(int(share * 100))
        ready, go, stop, counter = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        child = ctx.Process(target=trainer_main, args=(cfg, fused, device, ready, go, stop, counter,
                                                         args.seq_len, args.micro_batch))
        child.start()
        if not ready.wait(300):
            raise RuntimeError("the trainer process did not start")
        if partition == "mps":
            if env_before is None:
                os.environ.pop("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
            else:
                os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = env_before
        try:
            alone_tok_s = trained_rate(counter, go, 5.0)  # warms the trainer up too
            for batch in (int(b) for b in args.batches.split(",")):
                if time.monotonic() - t_start > args.budget_s:
                    break
                alone = decode_steps_ms(model, batch, args.context, args.steps, device)
                before = counter.value
                go.set()
                time.sleep(0.5)
                t0 = time.monotonic()
                beside = decode_steps_ms(model, batch, args.context, args.steps, device)
                seconds = time.monotonic() - t0
                go.clear()
                alone_med = sorted(alone)[len(alone) // 2]
                beside_med = sorted(beside)[len(beside) // 2]
                row = {"share": share, "batch": batch, "decode_alone_ms_p50": alone_med,
                       "decode_beside_ms_p50": beside_med, "slowdown": beside_med / alone_med,
                       "trained_tokens_per_s_beside": (counter.value - before) / seconds,
                       "trained_tokens_per_s_alone": alone_tok_s}
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop.set()
            go.set()
            child.join(60)
            if child.is_alive():
                child.kill()
    result["elapsed_s"] = time.monotonic() - t_start
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
