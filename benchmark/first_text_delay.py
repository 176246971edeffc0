"""How many tokens the embedded model streams before its first visible text.

    python benchmark/first_text_delay.py --out benchmark/results/<date>-first-text

Starts ``python -m harli_sgl.launch_server --harli-mode off`` on the embedded
default model and streams greedy ``/generate`` requests of random token ids (what
``sglang.bench_serving --dataset-name random-ids`` sends). For each it records the
completion-token count of the first chunk whose ``text`` is non-empty: bench_serving
stamps its TTFT there, so its "TTFT" is the prefill plus that many decode
iterations (docs/benchmarks.md §2c). Writes OUT/first_text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import requests

from harli_sgl.model import byte_model
from harli_sgl.tools.server_process import ServerProcess


def tokens_before_text(url: str, ids: list[int], max_new_tokens: int) -> int | None:
    r = requests.post(url + "/generate", stream=True, timeout=300, json={
        "input_ids": ids, "stream": True,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}})
    r.raise_for_status()
    for line in r.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk["text"]:
            return chunk["meta_info"]["completion_tokens"]
    return None  # no visible text within max_new_tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = byte_model.ensure()
    with open(os.path.join(model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    rng = random.Random(args.seed)
    server = ServerProcess(["--model-path", model, "--harli-mode", "off"],
                           log_path=os.path.join(args.out, "server.log"))
    with server:
        delays = [tokens_before_text(server.base_url,
                                     [rng.randrange(vocab) for _ in range(args.input_len)],
                                     args.max_new_tokens) for _ in range(args.prompts)]
    result = {"args": vars(args), "vocab_size": vocab, "tokens_before_first_text": delays}
    with open(os.path.join(args.out, "first_text.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
