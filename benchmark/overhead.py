"""What does Harli cost serving when no finetune job runs?

Runs ``sglang.bench_serving`` (random-ids) against stock ``python -m
sglang.launch_server`` and against ``python -m harli_sgl.launch_server
--harli-mode harli`` with no job, on the same model, flags and load. Both
servers stay up for the whole run and the benchmark alternates between them
(A B, B A, A B, ...), so slow drifts of this noisy machine hit both alike; an
idle server sleeps (``--sleep-on-idle``), so it does not disturb the other.
Reports per-round and overall ratios harli/stock of p50/p99 TPOT and output
throughput.

The harli server's start-up latency profile (about 60 s of bursts and synthetic
slots of up to 1 s) is waited out before the warm-up, so no round measures
stock against a profiling harli (an earlier version did, and its first round's
0.77 was that). The median of the per-round ratios is reported with their
range, and the verdict on the 3% goal says whether that range resolves it:
``met`` when every round's TPOT p50 ratio is at most 1.03, ``missed`` when
every one is above, else ``not resolved at this spread``.

    python benchmark/overhead.py --out benchmark/results/<date>-overhead --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import requests

from harli_sgl.tools import bench_model, server_latency
from harli_sgl.tools.bench_client import BenchLoad, request_tpots_ms, run_bench_serving
from harli_sgl.tools.server_process import ServerProcess, stock_sglang_argv


def measured(url: str, model: str, load: BenchLoad) -> dict:
    """One bench_serving run; TPOT and TTFT from the server's own per-request histograms
    (every token counts), bench_serving's visible-text TPOT kept beside them."""
    before = server_latency.read(url)
    result = run_bench_serving(url, model, load)
    server = server_latency.summary(before, server_latency.read(url))
    tpots = request_tpots_ms(result)
    return {
        **server,
        "client_tpot_p50_ms": statistics.median(tpots) if tpots else None,
        "output_tok_per_s": result["output_throughput"],
        "completed": result["completed"],
    }


GOAL = 1.03


def wait_profiled(url: str, timeout_s: float = 600.0) -> None:
    """Until the harli server's start-up latency profile is done (it loads or measures one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = requests.get(url + "/harli/status", timeout=60).json()
        if not st["profiling"] and st["predictor"]["profiled"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the start-up latency profile did not finish")
        time.sleep(2)


def verdict(ratios: list[float]) -> str:
    if max(ratios) <= GOAL:
        return "met"
    if min(ratios) > GOAL:
        return "missed"
    return "not resolved at this spread"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--model", default="smollm2", help="smollm2 (default), byte or byte-tiny")
    p.add_argument("--model-path", default=None, help="serve this directory instead of --model's")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--server-args", default="", help="extra flags given to BOTH servers")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    chosen = bench_model.resolve(args.model)
    model = args.model_path or chosen.path
    common = ["--model-path", model, "--served-model-name", chosen.served_name,
              *server_latency.server_args(), *args.server_args.split()]
    stock_argv, stock_env = stock_sglang_argv(common)
    workdir = tempfile.mkdtemp(prefix="harli-overhead-")
    servers = {
        "stock": ServerProcess(stock_argv, module="sglang.launch_server", env=stock_env,
                               log_path=os.path.join(args.out, "stock.log")),
        "harli": ServerProcess([*common, "--harli-mode", "harli", "--harli-workdir", workdir],
                               log_path=os.path.join(args.out, "harli.log")),
    }
    load = BenchLoad(num_prompts=args.num_prompts, input_len=args.input_len,
                     output_len=args.output_len, max_concurrency=args.max_concurrency,
                     warmup_requests=0)
    rows = []
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready()
        wait_profiled(servers["harli"].base_url)
        warm = BenchLoad(num_prompts=8, input_len=32, output_len=16, max_concurrency=8)
        for s in servers.values():
            run_bench_serving(s.base_url, model, warm)
        for r in range(args.rounds):
            order = ["stock", "harli"] if r % 2 == 0 else ["harli", "stock"]
            for name in order:
                res = measured(servers[name].base_url, model, load)
                rows.append({"round": r, "server": name, **res})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        for s in servers.values():
            s.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(row[key] for row in rows if row["server"] == name)

    per_round = []
    for r in range(args.rounds):
        a = next(x for x in rows if x["round"] == r and x["server"] == "stock")
        b = next(x for x in rows if x["round"] == r and x["server"] == "harli")
        per_round.append({k: b[k] / a[k] for k in ("tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s")})
    summary = {
        "load": vars(load) | {"request_rate": "inf"},
        "rounds": rows,
        "ratio_per_round": per_round,
        "ratio_of_medians": {k: med("harli", k) / med("stock", k)
                             for k in ("tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s")},
        "median_of_round_ratios": {k: statistics.median(x[k] for x in per_round)
                                   for k in ("tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s")},
        "range_of_round_ratios": {k: [min(x[k] for x in per_round), max(x[k] for x in per_round)]
                                  for k in ("tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s")},
        "goal_3pct_tpot_p50": verdict([x["tpot_p50_ms"] for x in per_round]),
    }
    with open(os.path.join(args.out, "overhead.json"), "w") as f:
        json.dump(summary, f, indent=2)

    print("\n| server | TPOT p50 (ms) | TPOT p99 (ms) | output tok/s |\n|---|---|---|---|")
    for name in ("stock", "harli"):
        print(f"| {name} | {med(name, 'tpot_p50_ms'):.2f} | {med(name, 'tpot_p99_ms'):.2f} | "
              f"{med(name, 'output_tok_per_s'):.1f} |")
    m = summary["median_of_round_ratios"]
    rng = summary["range_of_round_ratios"]
    print(f"\nharli/stock (median of per-round ratios [range]): TPOT p50 {m['tpot_p50_ms']:.3f} "
          f"{rng['tpot_p50_ms']}, TPOT p99 {m['tpot_p99_ms']:.3f}, throughput "
          f"{m['output_tok_per_s']:.3f} {rng['output_tok_per_s']}; 3% goal: "
          f"{summary['goal_3pct_tpot_p50']}")


if __name__ == "__main__":
    main()
