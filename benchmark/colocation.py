"""Co-location benchmark: decode QoS and finetune throughput per mode and request rate.

    python benchmark/colocation.py --out out/colocation
    python benchmark/colocation.py --out /tmp/small --modes idle,harli --rates 1,2 --duration-s 20

One harli_sgl server (embedded default model) runs one long finetune job for
the whole benchmark. For each mode the slot policy is switched at run time
(``POST /harli/policy``), so every mode sees the same job in the same state and
no restart perturbs the comparison; ``off`` is the QoS reference (the worker
exists but is never granted work). For each request rate it runs
``sglang.bench_serving`` (Poisson arrivals, random-ids) for ``--duration-s``
and records, per run: TPOT p50/p99 and SLO attainment from bench_serving's
per-request results (TPOT computed exactly as bench_serving does), failed
requests, and finetune tokens/s from the server's trained-token counter.

``static`` is tuned first, as an operator would: at the highest rate, slot
sizes are tried from small to large and the largest that still holds SLO
attainment >= 0.99 is kept. Predictor MAPE per stage is read from
``/harli/status`` (prospective error on held-out iterations).

Outputs: DIR/results.json (rows: mode, request_rate, tpot_p50_ms, tpot_p99_ms,
slo_attainment, finetune_tokens_per_s, failed_requests), DIR/summary.json,
DIR/colocation.png, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import requests

from harli_sgl.model import default_model
from harli_sgl.tools.bench_client import (
    BenchLoad, failed_requests, percentile, request_tpots_ms, run_bench_serving, slo_attainment,
)
from harli_sgl.tools.server_process import ServerProcess

MODES = ("off", "greedy", "idle", "static", "harli")
# Static slot sizes tried, in multiples of the job's largest piece: a smaller
# slot could never run a backward piece and would "hold the SLO" by not training.
STATIC_MULTIPLES = (1, 1.5, 2, 3, 4, 6, 8)


def training_rows(n: int, seed: int = 0) -> list[dict]:
    """Synthetic chat data for a job long enough to outlast the benchmark."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(100, 999), rng.randrange(100, 999)
        rows.append({"messages": [{"role": "user", "content": f"Add {a} and {b}."},
                                  {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]})
    return rows


class Bench:
    def __init__(self, args):
        self.args = args
        self.model = default_model.ensure()
        self.server = ServerProcess(
            ["--harli-mode", "harli", "--tpot-slo-ms", str(args.tpot_slo_ms),
             "--harli-workdir", os.path.join(args.out, "workdir"),
             "--harli-profile-dir", os.path.join(args.out, "profiles")],
            log_path=os.path.join(args.out, "server.log"))
        self.url = self.server.base_url

    def status(self) -> dict:
        return requests.get(self.url + "/harli/status", timeout=60).json()

    def set_mode(self, mode: str, static_units: int | None = None) -> None:
        # 0 is a real static size (tuning found none that holds the SLO): send it too.
        body = {"mode": mode, **({"static_slot_units": static_units}
                                 if static_units is not None else {})}
        r = requests.post(self.url + "/harli/policy", json=body, timeout=60)
        r.raise_for_status()

    def start(self) -> None:
        self.server.start().wait_ready()
        deadline = time.monotonic() + 600
        while self.status()["profiling"] or not self.status()["predictor"]["profiled"]:
            if time.monotonic() > deadline:
                raise TimeoutError("start-up profile did not finish")
            time.sleep(2)
        data = "".join(json.dumps(r) + "\n" for r in training_rows(2048)).encode()
        f = requests.post(self.url + "/v1/files", files={"file": ("train.jsonl", data)},
                          data={"purpose": "fine-tune"}, timeout=60).json()
        job = requests.post(self.url + "/v1/fine_tuning/jobs", timeout=60, json={
            "model": default_model.SPECS["default"].name, "training_file": f["id"],
            "hyperparameters": {"n_epochs": 50, "batch_size": 8}}).json()
        while requests.get(f"{self.url}/v1/fine_tuning/jobs/{job['id']}", timeout=60).json()["status"] \
                != "running":
            time.sleep(1)
        while not self.status()["worker"]["alive"]:
            time.sleep(1)

    def run(self, mode: str, rate: float, duration_s: float, static_units: int | None = None) -> dict:
        self.set_mode(mode, static_units)
        # Every run sends the same prompts for a given rate; without a flush, later
        # modes would hit the prefix cache on earlier modes' prompts.
        requests.post(self.url + "/flush_cache", timeout=60)
        time.sleep(self.args.settle_s)
        before, t0 = self.status()["totals"]["trained_tokens"], time.monotonic()
        load = BenchLoad(num_prompts=max(4, round(rate * duration_s)), input_len=self.args.input_len,
                         output_len=self.args.output_len, request_rate=rate, seed=int(rate * 1000))
        result = run_bench_serving(self.url, self.model, load)
        status = self.status()
        after, t1 = status["totals"]["trained_tokens"], time.monotonic()
        tpots = request_tpots_ms(result)
        return {
            "mode": mode, "request_rate": rate,
            "tpot_p50_ms": percentile(tpots, 50), "tpot_p99_ms": percentile(tpots, 99),
            "ttft_p50_ms": result["median_ttft_ms"], "ttft_p99_ms": result["p99_ttft_ms"],
            "slo_attainment": slo_attainment(tpots, self.args.tpot_slo_ms),
            "finetune_tokens_per_s": (after - before) / (t1 - t0),
            "failed_requests": failed_requests(result) + load.num_prompts - result["completed"],
            "completed": result["completed"], "static_slot_units": static_units,
            "policy": status["policy"], "predictor_mape": {
                "stage1": status["predictor"]["stage1"]["mape"],
                "stage2": status["predictor"]["stage2"]["mape"]},
        }

    def tune_static(self, rate: float) -> tuple[int, list[dict]]:
        piece = self.status()["worker"]["max_piece_units"]
        trials, best = [], 0
        for multiple in STATIC_MULTIPLES:
            units = int(piece * multiple)
            # Same load and duration as the measured runs: a shorter trial passes sizes
            # that the real run then fails.
            row = self.run("static", rate, self.args.duration_s, units)
            trials.append(row)
            print(json.dumps({"static_tuning": row}), flush=True)
            if (row["slo_attainment"] or 0) < 0.99:
                break
            best = units
        return best, trials


def plot(rows: list[dict], path: str, slo: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in MODES:
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["request_rate"])
        if not rs:
            continue
        x = [r["request_rate"] for r in rs]
        a.plot(x, [r["slo_attainment"] for r in rs], marker="o", label=mode)
        b.plot(x, [r["finetune_tokens_per_s"] for r in rs], marker="o", label=mode)
    a.axhline(0.99, color="grey", ls="--", lw=0.8)
    a.set(xlabel="request rate (req/s)", ylabel=f"SLO attainment (TPOT <= {slo:g} ms)",
          ylim=(-0.02, 1.02), title="Decode QoS")
    b.set(xlabel="request rate (req/s)", ylabel="finetune tokens/s", title="Finetune throughput")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--rates", default="0.5,1,1.5,2,2.5")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--tpot-slo-ms", type=float, default=100.0)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--static-units", type=int, default=None,
                   help="skip tuning and use this static slot size")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    rates = sorted(float(r) for r in args.rates.split(","))
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}")

    bench = Bench(args)
    rows, summary = [], {"args": vars(args)}
    try:
        bench.start()
        static_units = args.static_units
        if "static" in modes and static_units is None:
            static_units, trials = bench.tune_static(rates[-1])
            summary["static_tuning"] = {"rate": rates[-1], "chosen_units": static_units, "trials": trials}
        for mode in modes:
            for rate in rates:
                units = static_units if mode == "static" else None
                if mode == "static" and not units:
                    # No slot size held the SLO at the highest rate: static trains nothing.
                    units = 0
                row = bench.run(mode, rate, args.duration_s, units)
                rows.append(row)
                print(json.dumps(row), flush=True)
        summary["predictor"] = bench.status()["predictor"]
    finally:
        bench.server.stop()

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{k: r[k] for k in ("mode", "request_rate", "tpot_p50_ms", "tpot_p99_ms",
                                      "slo_attainment", "finetune_tokens_per_s", "failed_requests")}
                   for r in rows], f, indent=2)
    totals = {m: sum(r["finetune_tokens_per_s"] for r in rows if r["mode"] == m) for m in modes}
    summary["finetune_tokens_per_s_summed_over_rates"] = totals
    if "harli" in totals:
        summary["harli_over"] = {m: (totals["harli"] / totals[m] if totals[m] else None)
                                 for m in modes if m != "harli"}
    summary["rows"] = rows
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot(rows, os.path.join(args.out, "colocation.png"), args.tpot_slo_ms)

    print("\n| mode | rate (req/s) | TPOT p50 (ms) | TPOT p99 (ms) | SLO attainment | finetune tok/s "
          "| TTFT p50 (ms) | TTFT p99 (ms) | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['request_rate']:g} | {r['tpot_p50_ms']:.1f} | {r['tpot_p99_ms']:.1f} | "
              f"{r['slo_attainment']:.3f} | {r['finetune_tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | "
              f"{r['ttft_p99_ms']:.0f} | {r['failed_requests']} |")
    print(json.dumps({k: summary[k] for k in summary if k in (
        "finetune_tokens_per_s_summed_over_rates", "harli_over", "static_tuning")}, indent=1))
    pr = summary.get("predictor", {})
    print("predictor MAPE (held-out): stage 1", pr.get("stage1", {}).get("mape"),
          "stage 2", pr.get("stage2", {}).get("mape"))


if __name__ == "__main__":
    main()
