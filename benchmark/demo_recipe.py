"""Choose the demo job's data mix and hyperparameters by measurement (issue 18, item 3).

The demo (``python -m harli_sgl.demo``) teaches the served model facts no
pretrained model can know (``demo/quillmere.jsonl``, an invented town) and must
leave what the model already knew intact. This script trains candidate settings
with plain HF transformers + PEFT, the way the server's trainer does (same
record encoding and loss mask from :mod:`harli_sgl.core.trainer.data`, the same
per-epoch example order, LoRA on the seven Llama projections seeded like
:class:`~harli_sgl.core.trainer.job_trainer.JobTrainer`, AdamW betas (0.9,
0.999), eps 1e-8, no weight decay, constant lr = 1e-3 x multiplier, gradient
clipping at 1.0, one token-mean loss per step), then asks the adapter, greedily
through the chat template:

* the 8 invented facts (a fact counts as learned when its key word is in the answer);
* the general probe questions of ``demo/probes.json`` (never trained on) that the
  base model answers right (counted as kept when the adapter still does).

Subcommands:

``anchors``  answer the candidate general questions with the base model and write
             ``demo/general.jsonl`` (the base's own first sentence as the target),
             plus the base's answers to the probes, into ``--out``;
``run``      train and score the named settings (``--settings``; see SETTINGS).

Example (the committed results)::

    python benchmark/demo_recipe.py run --model /tmp/smollm2-hf \\
        --out benchmark/results/2026-12-02-demo-recipe --settings all
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from harli_sgl.core.trainer.data import IGNORE_INDEX, collate, encode_record, epoch_order  # noqa: E402
from harli_sgl.demo import recipe  # noqa: E402

MAX_NEW_TOKENS = 24
# 8 more general questions with the base's answers (from anchor_candidates2.txt): a candidate
# second half for demo/general.jsonl, measured as the mix "facts+general16" and not shipped.
MORE_GENERAL = os.path.join(HERE, "results", "2026-12-02-demo-recipe", "general_more.jsonl")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# name -> (data mix, n_epochs, batch_size, learning_rate_multiplier, lora r, lora alpha)
# mix: "facts" = the 8 facts alone; "facts+general" = facts plus demo/general.jsonl (8
# questions from anchor_candidates.txt); "facts+generalxK" repeats those K times;
# "facts+general16" adds the 8 of MORE_GENERAL too.
SETTINGS = {
    "issue-10ep-bs4-lr2": ("facts", 10, 4, 2.0, 16, 32),
    "facts-3ep-bs4-lr1": ("facts", 3, 4, 1.0, 16, 32),
    "facts-5ep-bs4-lr1": ("facts", 5, 4, 1.0, 16, 32),
    "facts-5ep-bs4-lr0.5": ("facts", 5, 4, 0.5, 16, 32),
    "mix-3ep-bs4-lr1": ("facts+general", 3, 4, 1.0, 16, 32),
    "mix-5ep-bs4-lr1": ("facts+general", 5, 4, 1.0, 16, 32),
    "mix-5ep-bs4-lr0.5": ("facts+general", 5, 4, 0.5, 16, 32),
    "mix-10ep-bs4-lr2": ("facts+general", 10, 4, 2.0, 16, 32),
    "mix-8ep-bs4-lr0.5": ("facts+general", 8, 4, 0.5, 16, 32),
    "mix-10ep-bs4-lr0.5": ("facts+general", 10, 4, 0.5, 16, 32),
    "mix-7ep-bs4-lr0.5": ("facts+general", 7, 4, 0.5, 16, 32),
    "mix-12ep-bs4-lr0.3": ("facts+general", 12, 4, 0.3, 16, 32),
    "mix16-8ep-bs4-lr0.5": ("facts+general16", 8, 4, 0.5, 16, 32),
    "mix16-6ep-bs4-lr0.5": ("facts+general16", 6, 4, 0.5, 16, 32),
    "mix-4ep-bs4-lr1": ("facts+general", 4, 4, 1.0, 16, 32),
    "mix2-5ep-bs4-lr1": ("facts+generalx2", 5, 4, 1.0, 16, 32),
    "mix2-4ep-bs4-lr1": ("facts+generalx2", 4, 4, 1.0, 16, 32),
    "mix-5ep-bs4-lr1-r8a16": ("facts+general", 5, 4, 1.0, 8, 16),
    "mix-5ep-bs4-lr1-r16a16": ("facts+general", 5, 4, 1.0, 16, 16),
    "mix-8ep-bs4-lr1-r16a16": ("facts+general", 8, 4, 1.0, 16, 16),
}


def load_model(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


@torch.no_grad()
def answer(model, tok, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy answers through the chat template, all questions in one left-padded batch."""
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                       return_dict=False, add_generation_prompt=True)
               for q in questions]
    prompts = [list(p) for p in prompts]
    width = max(map(len, prompts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=pad)
    model.train(was_training)
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def train(model, tok, records: list[dict], n_epochs: int, batch_size: int, lr: float,
          r: int, alpha: float, seed: int):
    """The server's training loop, in one process and without slots."""
    from peft import LoraConfig, get_peft_model

    examples = [encode_record(tok, rec, 1024) for rec in records]
    torch.manual_seed(seed)  # JobTrainer seeds LoRA's init with the job's seed
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha,
                                             lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                                             bias="none"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    losses = []
    steps_per_epoch = -(-len(examples) // batch_size)
    for epoch in range(n_epochs):
        order = epoch_order(len(examples), seed, epoch)
        epoch_losses = []
        for step in range(steps_per_epoch):
            batch = collate([examples[i] for i in order[step * batch_size:(step + 1) * batch_size]], pad)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            # Token t is predicted from tokens < t; mean over the step's supervised tokens.
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            epoch_losses.append(loss.item())
        losses.append(sum(epoch_losses) / len(epoch_losses))
        print(f"  epoch {epoch + 1}/{n_epochs}: mean train loss {losses[-1]:.4f}", flush=True)
    return model, losses


def score(model, tok, facts: list[dict], general: list[dict]) -> dict:
    qs = [f["question"] for f in facts] + [g["question"] for g in general]
    answers = answer(model, tok, qs)
    fa, ga = answers[:len(facts)], answers[len(facts):]
    return {
        "facts": [{"question": f["question"], "answer": a, "ok": recipe.correct(a, f)}
                  for f, a in zip(facts, fa)],
        "general": [{"question": g["question"], "answer": a, "ok": recipe.correct(a, g)}
                    for g, a in zip(general, ga)],
    }


def first_sentence(text: str) -> str:
    m = re.search(r"^(.+?[.!?])(\s|$)", text, re.S)
    return (m.group(1) if m else text).strip()


def cmd_anchors(args) -> None:
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    probes = recipe.load_probes()
    candidates = [l.strip() for l in open(args.candidates) if l.strip()]
    t0 = time.perf_counter()
    answers = answer(model, tok, candidates, max_new_tokens=40)
    probe_answers = answer(model, tok, [g["question"] for g in probes["general"]])
    rows = [{"question": q, "answer": a, "target": first_sentence(a)}
            for q, a in zip(candidates, answers)]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "anchors.json"), "w") as f:
        json.dump({"command": " ".join(sys.argv), "seconds": time.perf_counter() - t0,
                   "candidates": rows,
                   "probes": [{"question": g["question"], "answer": a, "ok": recipe.correct(a, g)}
                              for g, a in zip(probes["general"], probe_answers)]}, f, indent=1)
    for row in rows:
        print(json.dumps(row))
    for g, a in zip(probes["general"], probe_answers):
        print("probe", recipe.correct(a, g), repr(g["question"]), "->", repr(a))


def cmd_run(args) -> None:
    probes = recipe.load_probes()
    facts_records = recipe.read_jsonl(recipe.FACTS)
    general_records = recipe.read_jsonl(recipe.GENERAL)
    names = list(SETTINGS) if args.settings == "all" else args.settings.split(",")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {"runs": []}
    results.setdefault("commands", []).append(" ".join(sys.argv))
    done = {(r["setting"], r["seed"]) for r in results["runs"]}
    torch.set_num_threads(args.threads)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            if (name, seed) in done:
                continue
            model, tok = load_model(args.model)
            t0 = time.perf_counter()
            if name == "base":
                losses, setting = [], None
            else:
                mix, n_epochs, bs, mult, r, alpha = SETTINGS[name]
                k = int(mix.split("x")[1]) if "x" in mix else 1
                records = facts_records + (general_records * k if mix.startswith("facts+general") else [])
                if mix == "facts+general16":  # 8 more general questions, answered by the base
                    records = facts_records + general_records + recipe.read_jsonl(MORE_GENERAL)
                model, losses = train(model, tok, records, n_epochs, bs, 1e-3 * mult, r, alpha, seed)
                setting = {"mix": mix, "examples": len(records), "n_epochs": n_epochs,
                           "batch_size": bs, "learning_rate_multiplier": mult,
                           "lora": {"r": r, "alpha": alpha}}
            t_train = time.perf_counter() - t0
            s = score(model, tok, probes["facts"], probes["general"])
            run = {"setting": name, "seed": seed, "config": setting, "epoch_losses": losses,
                   "train_s": round(t_train, 1), "eval_s": round(time.perf_counter() - t0 - t_train, 1),
                   "facts_learned": sum(x["ok"] for x in s["facts"]), "n_facts": len(s["facts"]),
                   "general_right": sum(x["ok"] for x in s["general"]),
                   "n_general": len(s["general"]), **s}
            results["runs"].append(run)
            with open(path + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(path + ".tmp", path)
            print(f"{name} seed {seed}: facts {run['facts_learned']}/{run['n_facts']}, general "
                  f"{run['general_right']}/{run['n_general']}, losses "
                  f"{[round(x, 3) for x in losses]}, train {t_train:.0f}s eval {run['eval_s']}s",
                  flush=True)
            for x in s["facts"] + s["general"]:
                if not x["ok"]:
                    print(f"    miss {x['question']!r} -> {x['answer']!r}", flush=True)


def cmd_summary(args) -> None:
    """A table of every run in ``--out``'s results.json (and any --merge files folded in)."""
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path))
    for extra in args.merge or []:
        more = json.load(open(extra))
        have = {(r["setting"], r["seed"]) for r in results["runs"]}
        results["runs"] += [r for r in more["runs"] if (r["setting"], r["seed"]) not in have]
        results["commands"] += more["commands"]
    if args.merge:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    lines = ["| setting | seed | mix (examples) | epochs | batch | lr mult | LoRA r/alpha | facts "
             "learned | general kept | last epoch loss | train s |", "|" + "---|" * 11]
    for r in results["runs"]:
        c = r["config"] or {}
        facts = f"{sum(x['ok'] for x in r['facts'])}/{len(r['facts'])}"
        general = f"{sum(x['ok'] for x in r['general'])}/{len(r['general'])}"
        lora = f"{c['lora']['r']}/{c['lora']['alpha']:g}" if c else "-"
        loss = f"{r['epoch_losses'][-1]:.3f}" if r["epoch_losses"] else "-"
        lines.append(f"| {r['setting']} | {r['seed']} | {c.get('mix', '-')} ({c.get('examples', '-')}) "
                     f"| {c.get('n_epochs', '-')} | {c.get('batch_size', '-')} | "
                     f"{c.get('learning_rate_multiplier', '-')} | {lora} | {facts} | {general} | "
                     f"{loss} | {r['train_s']} |")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("anchors")
    a.add_argument("--model", required=True)
    a.add_argument("--candidates", required=True, help="one general question a line")
    a.add_argument("--out", required=True)
    a.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--settings", default="all", help="comma-separated names, 'base', or 'all'")
    r.add_argument("--seeds", default="0")
    r.add_argument("--threads", type=int, default=1, help="torch threads; on a shared, "
                   "loaded 2-core host 1 trained ~7x faster than 2 (563 s vs 77 s, 20 steps)")
    m = sub.add_parser("summary")
    m.add_argument("--out", required=True)
    m.add_argument("--merge", nargs="*", help="other results.json files to fold in")
    args = p.parse_args()
    {"anchors": cmd_anchors, "run": cmd_run, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    main()
