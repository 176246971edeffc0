"""Training throughput of the layer-chunked trainer by micro-batch size.

    python benchmark/trainer_throughput.py --out out/trainer

What ``--harli-micro-batch-size`` trades: a larger micro-batch trains more
tokens per second but makes every piece (the slot's granularity) longer. One
process, the default model's weights shared as on the server, LoRA r 16 on all
seven projections, sequences of ``--seq-len`` tokens, 2 torch threads, every
piece run on its own (as slots run them); warm-up steps are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def measure(mbs: int, seq_len: int, steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from harli_sgl.core.shared_weights import build_model, fuse
    from harli_sgl.core.trainer.chunked import ChunkedTrainer
    from harli_sgl.core.trainer.data import MicroBatch
    from harli_sgl.model import default_model

    torch.manual_seed(0)
    path = default_model.ensure()
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
    return {"micro_batch_size": mbs, "seq_len": seq_len, "tokens_per_s": tokens / elapsed,
            "mean_piece_ms": 1000 * elapsed / pieces}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for mbs in (1, 2, 4, 8):
        rows.append(measure(mbs, args.seq_len, args.steps))
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "trainer.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
