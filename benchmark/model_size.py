"""Is a decode iteration of the ``small`` byte-level test model dominated by model compute?

    python benchmark/model_size.py --out out/model_size

Serves the random byte-level ``small`` model (``byte-llama-random``) and the
2-layer, 128-wide ``tiny`` model with *stock* SGLang (same CPU recipe) and
measures decode TPOT p50 with ``sglang.bench_serving`` at concurrency 1 and 8.
The tiny model's iteration is almost all per-iteration framework work
(scheduling, sampling, Python), so ``1 - tiny / small`` estimates the share of
the small model's iteration spent in model compute. This is how the test
model's size was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from harli_sgl.model import byte_model
from harli_sgl.tools.bench_client import BenchLoad, request_tpots_ms, run_bench_serving
from harli_sgl.tools.server_process import ServerProcess, stock_sglang_argv


def tpot_p50(size: str, concurrency: int, out: str) -> float:
    model = byte_model.ensure(size)
    argv, env = stock_sglang_argv(["--model-path", model])
    server = ServerProcess(argv, module="sglang.launch_server", env=env,
                           log_path=os.path.join(out, f"{size}-c{concurrency}.log"))
    server.start().wait_ready()
    try:
        run_bench_serving(server.base_url, model, BenchLoad(num_prompts=4, input_len=32,
                                                            output_len=16, max_concurrency=4))
        result = run_bench_serving(server.base_url, model, BenchLoad(
            num_prompts=2 * concurrency, input_len=32, output_len=64, max_concurrency=concurrency))
        return statistics.median(request_tpots_ms(result))
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for concurrency in (1, 8):
        ms = {size: tpot_p50(size, concurrency, args.out) for size in ("small", "tiny")}
        rows.append({"batch": concurrency, "small_tpot_p50_ms": ms["small"],
                     "tiny_tpot_p50_ms": ms["tiny"],
                     "model_compute_share": 1 - ms["tiny"] / ms["small"]})
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "model_size.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
