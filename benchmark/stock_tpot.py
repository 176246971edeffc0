"""Stock SGLang's decode TPOT on the served model, by batch size and cores: what an SLO can ask.

    python benchmark/stock_tpot.py --out benchmark/results/<date>-stock-tpot

The CPU defaults (the TPOT SLO above all) must be set from what stock SGLang
itself does on this host with this model: an SLO below stock's TPOT at the
batch sizes the server admits is one no policy can hold, one far above it lets
training take latency users would notice. This runs stock ``python -m
sglang.launch_server`` (the CPU recipe harli_sgl applies, nothing else) on the
model, with ``sglang.bench_serving`` (random-ids, ``--input-len`` in /
``--output-len`` out, closed loop at each ``--concurrency``: the batch size
decode runs at), and reads per-request TPOT from the server's own histogram
(``harli_sgl/tools/server_latency.py``: every token counts).

Two placements, both servers up for the whole run and alternated per rep
(an idle server sleeps, ``--sleep-on-idle``): ``all`` (every core) and
``core0`` (the server confined to core 0, where harli_sgl's decode runs while a
job co-runs on a 2-core host). Writes DIR/stock_tpot.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from harli_sgl.tools import bench_model, server_latency
from harli_sgl.tools.bench_client import BenchLoad, run_bench_serving
from harli_sgl.tools.server_process import ServerProcess, stock_sglang_argv


def kv_bytes_per_token(model_path: str, dtype_bytes: int = 4) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * dtype_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2", help="smollm2 (default), byte or byte-tiny")
    p.add_argument("--concurrency", default="1,8,16")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--waves", type=int, default=2, help="requests per run = waves x concurrency")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = bench_model.resolve(args.model)
    argv, env = stock_sglang_argv([*model.server_flags(), *server_latency.server_args()])
    placements = {"all": None, "core0": (0,)}
    servers = {name: ServerProcess(argv, module="sglang.launch_server", env=env, cpus=cpus,
                                   log_path=os.path.join(args.out, f"stock-{name}.log"))
               for name, cpus in placements.items()}
    concurrency = [int(c) for c in args.concurrency.split(",")]
    rows = []
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready()
        for s in servers.values():  # warm-up, not counted
            run_bench_serving(s.base_url, model.path, BenchLoad(num_prompts=4, input_len=32,
                                                                output_len=8, max_concurrency=4))
        for rep in range(args.reps):
            order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
            for name in order:
                for c in concurrency:
                    url = servers[name].base_url
                    load = BenchLoad(num_prompts=args.waves * c, input_len=args.input_len,
                                     output_len=args.output_len, max_concurrency=c, seed=100 + rep,
                                     warmup_requests=0)
                    before = server_latency.read(url)
                    result = run_bench_serving(url, model.path, load)
                    row = {"placement": name, "concurrency": c, "rep": rep,
                           **server_latency.summary(before, server_latency.read(url)),
                           "output_tok_per_s": result["output_throughput"],
                           "completed": result["completed"]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    table = {}
    for name in servers:
        for c in concurrency:
            xs = [r for r in rows if r["placement"] == name and r["concurrency"] == c]
            table[f"{name}/c{c}"] = {k: {"mean": statistics.mean(r[k] for r in xs),
                                         "min": min(r[k] for r in xs), "max": max(r[k] for r in xs)}
                                     for k in ("tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s")}
    out = {"args": vars(args), "model": model.served_name,
           "kv_bytes_per_token_fp32": kv_bytes_per_token(model.path), "rows": rows, "table": table}
    with open(os.path.join(args.out, "stock_tpot.json"), "w") as f:
        json.dump(out, f, indent=2)
    print("\n| placement | concurrency | TPOT p50 ms mean [min, max] | TPOT p99 ms mean [min, max] "
          "| output tok/s |\n|---|---|---|---|---|")
    for key, v in table.items():
        name, c = key.split("/c")
        f = lambda k: f"{v[k]['mean']:.1f} [{v[k]['min']:.1f}, {v[k]['max']:.1f}]"
        print(f"| {name} | {c} | {f('tpot_p50_ms')} | {f('tpot_p99_ms')} | {f('output_tok_per_s')} |")
    print(f"\nKV cache: {out['kv_bytes_per_token_fp32']} bytes per token (fp32)")


if __name__ == "__main__":
    main()
