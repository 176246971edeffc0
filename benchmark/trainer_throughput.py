"""Training throughput of the layer-chunked trainer by micro-batch size.

    python benchmark/trainer_throughput.py --out out/trainer

What ``--harli-micro-batch-size`` trades: a larger micro-batch trains more
tokens per second but makes every piece (the slot's granularity) longer. One
process, the model's weights (``--model``: the embedded SmolLM2 by default) shared as on the server, LoRA r 16 on all
seven projections, sequences of ``--seq-len`` tokens, every piece run on its
own (as slots run them); warm-up steps are not counted.

``--threads 1,2`` measures each micro-batch size at each torch thread count,
the two runs of a pair side by side and ``--reps`` times, alternating which
goes first. On a 2-core host the ratio 2 threads / 1 thread bounds what any
policy can add over a fixed one-core partition (``spatial``): with every core
free all the time, the worker trains at most that much faster.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def measure(mbs: int, seq_len: int, steps: int, threads: int = 2, which: str = "smollm2") -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from harli_sgl.core.shared_weights import build_model, fuse
    from harli_sgl.core.trainer.chunked import ChunkedTrainer
    from harli_sgl.core.trainer.data import MicroBatch
    from harli_sgl.tools import bench_model

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    path = bench_model.resolve(which).path
    cfg = AutoConfig.from_pretrained(path)
    fused = fuse(AutoModelForCausalLM.from_pretrained(path).state_dict(), cfg)
    model = get_peft_model(build_model(cfg, fused), LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    trainer = ChunkedTrainer(model, torch.optim.AdamW(params, lr=1e-4))
    ids = torch.randint(0, cfg.vocab_size, (mbs, seq_len))
    batch = MicroBatch(ids, torch.ones_like(ids), ids.clone())
    tokens = pieces = 0
    t0 = 0.0
    for step in range(steps + 2):
        if step == 2:
            t0, tokens, pieces = time.perf_counter(), 0, 0
        trainer.start_step([batch])
        while not trainer.idle:
            r = trainer.run(trainer.min_piece_units)
            tokens += r.trained_tokens
            pieces += r.pieces
    elapsed = time.perf_counter() - t0
    return {"model": which, "micro_batch_size": mbs, "seq_len": seq_len, "threads": threads,
            "tokens_per_s": tokens / elapsed,
            "mean_piece_ms": 1000 * elapsed / pieces}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--micro-batch-sizes", default="1,2,4,8")
    p.add_argument("--threads", default="2", help="torch thread counts, comma-separated")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--model", default="smollm2", help="smollm2 (default), byte or byte-tiny")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    for mbs in (int(m) for m in args.micro_batch_sizes.split(",")):
        for rep in range(args.reps):
            for n in (threads if rep % 2 == 0 else threads[::-1]):
                rows.append({**measure(mbs, args.seq_len, args.steps, n, args.model), "rep": rep})
                print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "trainer.json"), "w") as f:
        json.dump(rows, f, indent=2)
    if len(threads) > 1:
        for mbs in sorted({r["micro_batch_size"] for r in rows}):
            speed = {n: [r["tokens_per_s"] for r in rows
                         if r["micro_batch_size"] == mbs and r["threads"] == n] for n in threads}
            ratios = [b / a for a, b in zip(speed[threads[0]], speed[threads[-1]])]
            print(f"micro-batch {mbs}: {threads[-1]} threads / {threads[0]} = "
                  + ", ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
