"""Co-location benchmark: decode QoS and finetune throughput per mode and request rate.

    python benchmark/colocation.py --out benchmark/results/<date>-colocation --tune-rate R
    python benchmark/colocation.py --out /tmp/small --modes off,harli --rates 1,2 --duration-s 20 --reps 1

One harli_sgl server (``--model``: the embedded SmolLM2 by default) runs one
long finetune job for the whole benchmark. For each mode the slot policy is
switched at run time (``POST /harli/policy``), so every mode sees the same job
in the same state and no restart perturbs the comparison; ``off`` is the QoS
reference (the worker exists but is never granted work). For each request rate
it runs ``sglang.bench_serving`` (Poisson arrivals, random-ids, the trace's
seed from ``--seed`` and the rate) for ``--duration-s`` and records, per run:
TTFT, TPOT and SLO attainment per request **as the server measured them**
(SGLang's own histograms, every generated token counted:
harli_sgl/tools/server_latency.py), bench_serving's visible-text figures beside
them (``client_*``, ``ttft_text_*``), failed requests, and finetune tokens/s
from the server's trained-token counter.

The rules of docs/benchmarks.md apply: rates fixed before the run (light load
up to where ``off`` first drops below 0.99 attainment, plus one above, found by
a ``--modes off`` run on another seed); every rate reported. ``static`` is tuned
as an operator would, on a trace not reported (``--tune-seed``) at a rate where
``off`` holds the SLO (``--tune-rate``): slot sizes are tried from small to
large and the largest that still holds SLO attainment >= 0.99 is kept.
``spatial`` uses the one fixed partition a 2-core host offers (one core of
two). Predictor MAPE per stage and arrangement is read from ``/harli/status``
(prospective error on held-out iterations), as is the server's own harvest.

Noise. The whole set of modes runs ``--reps`` times, the order of modes
reversed on every other repetition, and the summary reports each ratio per
repetition and its spread.

Finetune throughput counts the arrival period only: a thread polls the
server's trained-token counter every 0.5 s, the period starts when the first
request is in flight and lasts ``num_prompts / rate`` seconds (bench_serving's
start-up and the drain after the last arrival are excluded).

Harvest = finetune tokens/s under load / the same job's tokens/s on the idle
server, measured by this benchmark with no traffic (``harli`` mode: the worker
co-runs on every core) before and after each repetition.

Outputs: DIR/results.json (one row per run), DIR/summary.json (rows with the
policy's and predictor's state, tuning, ratios), DIR/colocation.png, and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time

import requests

from harli_sgl.tools import bench_model, server_latency
from harli_sgl.tools.bench_client import (
    BenchLoad, failed_requests, percentile, request_tpots_ms, run_bench_serving, slo_attainment,
    token_itls_ms,
)
from harli_sgl.tools.server_process import ServerProcess

MODES = ("off", "greedy", "idle", "static", "spatial", "harli-serial", "harli", "harli-prefill-decode")
DEFAULT_MODES = ("off", "idle", "static", "spatial", "harli-serial", "harli")
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


class CounterPoller(threading.Thread):
    """Samples (time, trained tokens, job units, requests in flight) from /harli/status every 0.5 s.

    Trained tokens move only when a micro-batch's backward ends (~225 tokens at once for
    this job: 7.5 tok/s of a 30 s run), units with every piece; so rates are read from units
    and turned into tokens with the whole run's tokens per unit (:func:`tokens_per_unit`).
    """

    def __init__(self, bench):
        super().__init__(daemon=True)
        self.bench, self.samples = bench, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            s = self.bench.status()
            self.samples.append((time.monotonic(), s["totals"]["trained_tokens"],
                                 s["totals"]["units"], s.get("requests_in_flight", 0)))
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def at(self, t: float, field: int) -> float:
        """Trained tokens (``field`` 1) or units (2) at time t (linear between samples)."""
        xs = self.samples
        for a, b in zip(xs, xs[1:]):
            if a[0] <= t <= b[0]:
                return a[field] + (b[field] - a[field]) * (t - a[0]) / max(b[0] - a[0], 1e-9)
        return xs[-1][field] if t > xs[-1][0] else xs[0][field]

    def arrival_rate(self, arrival_s: float) -> tuple[float, float, float]:
        """(trained tokens/s, units/s) over the arrival period, and its length in s."""
        start = next((s[0] for s in self.samples if s[3] > 0), self.samples[0][0])
        end = min(start + arrival_s, self.samples[-1][0])
        span = max(end - start, 1e-9)
        return ((self.at(end, 1) - self.at(start, 1)) / span,
                (self.at(end, 2) - self.at(start, 2)) / span, end - start)


def tokens_per_unit(status: dict) -> float | None:
    """The job's trained tokens per unit over the whole run (the last, unfinished micro-batch's
    units are under 1% of a run's)."""
    totals = status["totals"]
    return totals["trained_tokens"] / totals["units"] if totals["units"] else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.model = bench_model.resolve(args.model)
        if args.trace:  # read by the server's scheduler: every iteration and co-run piece
            os.environ["HARLI_TRACE_ITERATIONS"] = os.path.join(os.path.abspath(args.out),
                                                                "trace.jsonl")
        self.server = ServerProcess(
            ["--harli-mode", "harli", "--tpot-slo-ms", str(args.tpot_slo_ms),
             "--harli-workdir", os.path.join(args.out, "workdir"),
             "--harli-profile-dir", os.path.join(args.out, "profiles"),
             *server_latency.server_args(), *self.model.server_flags()],
            log_path=os.path.join(args.out, "server.log"))
        self.url = self.server.base_url

    def status(self) -> dict:
        return requests.get(self.url + "/harli/status", timeout=60).json()

    def set_mode(self, mode: str, static_units: int | None = None) -> None:
        # 0 is a real static size (tuning found none that holds the SLO): send it too.
        # harli runs prefill batches on every core (--harli-prefill-cpus all, its default);
        # harli-prefill-decode keeps them on decode's core, as harli did before 2026-12-02.
        # The baselines keep theirs on decode's core.
        body = {"mode": "harli" if mode == "harli-prefill-decode" else mode,
                "prefill_cpus": "all" if mode == "harli" else "decode",
                **({"static_slot_units": static_units} if static_units is not None else {})}
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
            "model": self.model.served_name, "training_file": f["id"],
            "hyperparameters": {"n_epochs": 50, "batch_size": 8}}).json()
        while requests.get(f"{self.url}/v1/fine_tuning/jobs/{job['id']}", timeout=60).json()["status"] \
                != "running":
            time.sleep(1)
        # The job is claimed before its data is tokenised (on the worker's prepare thread);
        # static tuning sizes slots from its pieces, so wait until the worker announces them.
        while not (self.status()["worker"]["alive"] and self.status()["worker"]["max_piece_units"]):
            time.sleep(1)

    def run(self, mode: str, rate: float, duration_s: float, static_units: int | None = None,
            rep: int = 0, seed: int | None = None) -> dict:
        self.set_mode(mode, static_units)
        # Every run sends the same prompts for a given rate; without a flush, later
        # modes would hit the prefix cache on earlier modes' prompts.
        requests.post(self.url + "/flush_cache", timeout=60)
        time.sleep(self.args.settle_s)
        load = BenchLoad(num_prompts=max(4, round(rate * duration_s)), input_len=self.args.input_len,
                         output_len=self.args.output_len, request_rate=rate,
                         seed=(self.args.seed if seed is None else seed) * 100_000 + int(rate * 1000),
                         warmup_requests=0)
        poller = CounterPoller(self)
        latency_before = server_latency.read(self.url)
        poller.start()
        try:
            result = run_bench_serving(self.url, self.model.path, load)
        finally:
            poller.stop()
        # TTFT, TPOT and SLO attainment per request as the server measured them (every
        # token counts; harli_sgl/tools/server_latency.py).
        server = server_latency.summary(latency_before, server_latency.read(self.url),
                                        self.args.tpot_slo_ms)
        status = self.status()
        tok_s, units_s, window_s = poller.arrival_rate(load.num_prompts / rate)
        tpots = request_tpots_ms(result)
        return {
            "mode": mode, "request_rate": rate, "rep": rep, "seed": load.seed,
            "tpot_p50_ms": server["tpot_p50_ms"], "tpot_p99_ms": server["tpot_p99_ms"],
            "itl_p99_ms": percentile(token_itls_ms(result), 99),
            "ttft_p50_ms": server["ttft_p50_ms"], "ttft_p99_ms": server["ttft_p99_ms"],
            "server_requests": server["server_requests"],
            # bench_serving's own view, from the first visible text and the gaps between
            # visible chunks: kept beside the server's to show how far they differ.
            "client_tpot_p50_ms": percentile(tpots, 50), "client_tpot_p99_ms": percentile(tpots, 99),
            "client_slo_attainment": slo_attainment(tpots, self.args.tpot_slo_ms),
            "ttft_text_p50_ms": result["median_ttft_ms"], "ttft_text_p99_ms": result["p99_ttft_ms"],
            "slo_attainment": server["slo_attainment"],
            # Provisional (whole micro-batches); main() sets it from units at the end.
            "finetune_tokens_per_s": tok_s, "finetune_tokens_per_s_counter": tok_s,
            "finetune_units_per_s": units_s, "arrival_window_s": window_s,
            "harvest": None,  # main(): against the run's idle speed, in units
            "failed_requests": failed_requests(result) + load.num_prompts - result["completed"],
            "completed": result["completed"], "static_slot_units": static_units,
            "policy": status["policy"], "arrangement": status.get("arrangement"),
            "server_harvest": (status.get("harvest") or {}).get("value"),
            "server_harvest_detail": status.get("harvest"), "predictor_mape": {
                "stage1": status["predictor"]["stage1"]["mape"],
                "stage2": status["predictor"]["stage2"]["mape"],
                "by_arrangement": status["predictor"].get("stage2_by_arrangement")},
        }

    def idle_units_per_s(self, seconds: float) -> float:
        """The job's units/s on the idle server with the worker on the whole device:
        the ``idle`` policy's serial slots, on every core in the normal class (``harli`` itself
        may keep an idle worker on its share when every core was measured not to pay)."""
        self.set_mode("idle")
        time.sleep(self.args.settle_s)
        s0, t0 = self.status()["totals"]["units"], time.monotonic()
        time.sleep(seconds)
        s1, t1 = self.status()["totals"]["units"], time.monotonic()
        return (s1 - s0) / (t1 - t0)

    def tune_static(self, rate: float, seed: int) -> tuple[int, list[dict]]:
        piece = self.status()["worker"]["max_piece_units"]
        trials, best = [], 0
        for multiple in STATIC_MULTIPLES:
            units = int(piece * multiple)
            # Same load and duration as the measured runs: a shorter trial passes sizes
            # that the real run then fails.
            row = self.run("static", rate, self.args.duration_s, units, seed=seed)
            trials.append(row)
            print(json.dumps({"static_tuning": row}), flush=True)
            if (row["slo_attainment"] or 0) < 0.99:
                break
            best = units
        return best, trials


def find_rates(bench: Bench, args) -> tuple[list[float], dict]:
    """The rule of docs/benchmarks.md, applied before any reported run: `off` on the tuning
    seed up the grid until it first drops below 0.99 attainment."""
    grid = sorted(float(r) for r in args.find_rates.split(","))
    trials, knee, first_fail = [], None, None
    for rate in grid:
        row = bench.run("off", rate, args.duration_s, seed=args.tune_seed)
        trials.append(row)
        print(json.dumps({"rate_finding": row}), flush=True)
        if (row["slo_attainment"] or 0) >= 0.99:
            knee = rate
        else:
            first_fail = rate
            break
    if knee is None:
        raise SystemExit(f"`off` misses the SLO already at {grid[0]} req/s: lower the grid or raise the SLO")
    rates = sorted({grid[0], knee, *([first_fail] if first_fail is not None else [])})
    return rates, {"grid": grid, "seed": args.tune_seed, "knee": knee, "first_fail": first_fail,
                   "trials": trials}


def plot(rows: list[dict], path: str, slo: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        if not rs:
            continue
        x = sorted({r["request_rate"] for r in rs})
        mean = lambda key, rate: statistics.mean(r[key] or 0 for r in rs if r["request_rate"] == rate)
        a.plot(x, [mean("slo_attainment", q) for q in x], marker="o", label=mode)
        b.plot(x, [mean("finetune_tokens_per_s", q) for q in x], marker="o", label=mode)
    a.axhline(0.99, color="grey", ls="--", lw=0.8)
    a.set(xlabel="request rate (req/s)", ylabel=f"SLO attainment (TPOT <= {slo:g} ms)",
          ylim=(-0.02, 1.02), title="Decode QoS")
    b.set(xlabel="request rate (req/s)", ylabel="finetune tokens/s", title="Finetune throughput")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(rows: list[dict], modes: list[str], rates: list[float], reps: int) -> dict:
    out: dict = {}
    per_rep = {rep: {m: sum(r["finetune_tokens_per_s"] for r in rows if r["mode"] == m and r["rep"] == rep)
                     for m in modes} for rep in range(reps)}
    out["finetune_tokens_per_s_summed_over_rates"] = per_rep
    if "harli" in modes:
        ratios = {m: [per_rep[rep]["harli"] / per_rep[rep][m] if per_rep[rep][m] else None
                      for rep in range(reps)] for m in modes if m != "harli"}
        out["harli_over"] = ratios
        if "harli-serial" in modes:
            out["harli_at_least_harli_serial_every_rate"] = {
                f"{rate:g}/rep{rep}": next(r["finetune_tokens_per_s"] for r in rows if r["mode"] == "harli"
                                          and r["request_rate"] == rate and r["rep"] == rep) >=
                next(r["finetune_tokens_per_s"] for r in rows if r["mode"] == "harli-serial"
                     and r["request_rate"] == rate and r["rep"] == rep)
                for rate in rates for rep in range(reps)}
        harli = [r for r in rows if r["mode"] == "harli"]
        out["harli_attainment_min"] = min((r["slo_attainment"] or 0) for r in harli)
        out["harli_failed_requests"] = sum(r["failed_requests"] for r in harli)
        out["harli_harvest"] = {f"{rate:g}": [r["harvest"] for r in harli if r["request_rate"] == rate]
                                for rate in rates}
        if "off" in modes:
            out["ttft_p99_harli_over_off"] = {
                f"{rate:g}": [next(r["ttft_p99_ms"] for r in harli if r["request_rate"] == rate and r["rep"] == rep)
                              / next(r["ttft_p99_ms"] for r in rows if r["mode"] == "off"
                                     and r["request_rate"] == rate and r["rep"] == rep)
                              for rep in range(reps)] for rate in rates}
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, (int, float)) else json.dumps(x)


def targets(rows: list[dict], modes: list[str], rates: list[float], reps: int,
            predictor: dict | None) -> dict:
    """Issue 18's targets, each judged per rep (a target is met only if every rep meets it)."""
    def row(mode: str, rate: float, rep: int) -> dict | None:
        return next((r for r in rows if r["mode"] == mode and r["request_rate"] == rate
                     and r["rep"] == rep), None)

    def tok(mode: str, rep: int) -> float:
        return sum(r["finetune_tokens_per_s"] for r in rows if r["mode"] == mode and r["rep"] == rep)

    out: dict = {}
    if "harli" not in modes:
        return out
    per_rep = range(reps)
    if "off" in modes:
        out["attainment_ge_0.99_wherever_off_is"] = {
            f"{q:g}/rep{k}": [row("off", q, k)["slo_attainment"], row("harli", q, k)["slo_attainment"]]
            for q in rates for k in per_rep if (row("off", q, k)["slo_attainment"] or 0) >= 0.99}
        out["attainment_ge_0.99_wherever_off_is_met"] = all(
            (h or 0) >= 0.99 for _, h in out["attainment_ge_0.99_wherever_off_is"].values())
        out["ttft_p99_le_1.5x_off"] = {
            f"{q:g}/rep{k}": row("harli", q, k)["ttft_p99_ms"] / row("off", q, k)["ttft_p99_ms"]
            for q in rates for k in per_rep if row("off", q, k)["ttft_p99_ms"]}
        out["ttft_p99_le_1.5x_off_met"] = all(v <= 1.5 for v in out["ttft_p99_le_1.5x_off"].values())
    out["failed_requests_harli"] = sum(r["failed_requests"] for r in rows if r["mode"] == "harli")
    out["harvest_lightest_ge_0.80"] = [row("harli", rates[0], k)["harvest"] for k in per_rep]
    out["harvest_heaviest_ge_0.50"] = [row("harli", rates[-1], k)["harvest"] for k in per_rep]
    out["harvest_met"] = all((h or 0) >= 0.8 for h in out["harvest_lightest_ge_0.80"]) and all(
        (h or 0) >= 0.5 for h in out["harvest_heaviest_ge_0.50"])
    for other, factor in (("harli-serial", 1.15), ("static", 1.5), ("idle", 1.5)):
        if other in modes:
            ratios = [tok("harli", k) / tok(other, k) if tok(other, k) else None for k in per_rep]
            out[f"summed_over_{other}_ge_{factor}"] = ratios
            out[f"summed_over_{other}_met"] = all(x is not None and x >= factor for x in ratios)
    if "harli-serial" in modes:
        out["never_below_harli_serial"] = all(
            row("harli", q, k)["finetune_tokens_per_s"] >= row("harli-serial", q, k)["finetune_tokens_per_s"]
            for q in rates for k in per_rep)
    if "spatial" in modes:
        # Where spatial holds the SLO harli must train at least as much; where it does not,
        # harli must attain more.
        verdicts = {}
        for q in rates:
            for k in per_rep:
                sp, h = row("spatial", q, k), row("harli", q, k)
                if (sp["slo_attainment"] or 0) >= 0.99:
                    verdicts[f"{q:g}/rep{k}"] = ("train", h["finetune_tokens_per_s"] / max(sp["finetune_tokens_per_s"], 1e-9),
                                                 h["finetune_tokens_per_s"] >= sp["finetune_tokens_per_s"])
                else:
                    verdicts[f"{q:g}/rep{k}"] = ("attain", (h["slo_attainment"] or 0) - (sp["slo_attainment"] or 0),
                                                 (h["slo_attainment"] or 0) > (sp["slo_attainment"] or 0))
        out["vs_spatial"] = verdicts
        out["vs_spatial_met"] = all(v[2] for v in verdicts.values())
    # Per run: a mode switch starts fresh error windows, so the run's own held-out
    # iterations are read from its row (the status at its end), not from the last status.
    out["mape_stage1_le_0.10"] = {}
    out["mape_stage2_le_0.20"] = {}
    for q in rates:
        for k in per_rep:
            m = (row("harli", q, k) or {}).get("predictor_mape") or {}
            out["mape_stage1_le_0.10"][f"{q:g}/rep{k}"] = m.get("stage1")
            out["mape_stage2_le_0.20"][f"{q:g}/rep{k}"] = {
                a: (v or {}).get("mape") for a, v in (m.get("by_arrangement") or {}).items()}
    if predictor:
        out["mape_at_the_end"] = {"stage1": predictor["stage1"]["mape"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--modes", default=",".join(DEFAULT_MODES))
    # Decode on one core saturates near 1.25 req/s (128 in / 64 out): `off` itself
    # missed the SLO there in the 2026-12-01 run, so the default set stops below it.
    p.add_argument("--rates", default="0.25,0.5,0.75,1")
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--idle-s", type=float, default=20.0)
    p.add_argument("--tpot-slo-ms", type=float, default=100.0)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--trace", action="store_true",
                   help="write the server's iteration trace to OUT/trace.jsonl")
    p.add_argument("--model", default="smollm2", help="smollm2 (default), byte or byte-tiny")
    p.add_argument("--seed", type=int, default=0, help="the reported trace's seed")
    p.add_argument("--tune-seed", type=int, default=1,
                   help="the seed static tuning runs on (not the reported one)")
    p.add_argument("--tune-rate", type=float, default=None,
                   help="the rate static is tuned at: one where `off` holds the SLO (find it with "
                        "a --modes off run on another seed); required to tune static")
    p.add_argument("--find-rates", default=None, metavar="GRID",
                   help="fix the rates first, by rule, on --tune-seed: run `off` up GRID (ascending, "
                        "comma-separated) until its attainment drops below 0.99; the rates are then the "
                        "lightest, the last that held (the knee) and the first that did not, and static "
                        "is tuned at the knee (overrides --rates and --tune-rate)")
    p.add_argument("--static-units", type=int, default=None,
                   help="skip tuning and use this static slot size")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    rates = sorted(float(r) for r in args.rates.split(","))
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}")
    if "static" in modes and args.static_units is None and args.tune_rate is None \
            and not args.find_rates:
        raise SystemExit("static needs --static-units or --tune-rate (a rate where `off` holds the SLO)")

    bench = Bench(args)
    rows, summary = [], {"args": vars(args)}
    try:
        bench.start()
        if args.find_rates:
            rates, summary["rate_finding"] = find_rates(bench, args)
            args.tune_rate = summary["rate_finding"]["knee"]
            print(json.dumps({"rates": rates, "tune_rate": args.tune_rate}), flush=True)
        static_units = args.static_units
        if "static" in modes and static_units is None:
            # As an operator would, and fairly: at a rate where `off` holds the SLO (a baseline
            # tuned where nothing can hold it trains nothing), on a trace not reported.
            static_units, trials = bench.tune_static(args.tune_rate, args.tune_seed)
            summary["static_tuning"] = {"rate": args.tune_rate, "seed": args.tune_seed,
                                        "chosen_units": static_units, "trials": trials}
        if "spatial" in modes:
            share = bench.status()["arrangement"]["available_share"]
            # Shares this host offers for a fixed partition; 2 cores offer one (1 of 2).
            summary["spatial_tuning"] = {"candidate_shares": [share] if share else [],
                                         "chosen_share": share or None}
        idle = []
        for rep in range(args.reps):
            idle.append(bench.idle_units_per_s(args.idle_s))
            print(json.dumps({"idle_units_per_s": idle[-1], "rep": rep}), flush=True)
            order = modes if rep % 2 == 0 else list(reversed(modes))
            for mode in order:
                for rate in rates:
                    units = static_units if mode == "static" else None
                    if mode == "static" and not units:
                        units = 0  # no slot size held the SLO at the highest rate
                    row = bench.run(mode, rate, args.duration_s, units, rep=rep)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        idle.append(bench.idle_units_per_s(args.idle_s))
        per_unit = tokens_per_unit(bench.status())
        summary["tokens_per_unit"] = per_unit
        summary["idle_units_per_s"] = idle
        summary["idle_tokens_per_s"] = [u * (per_unit or 0.0) for u in idle]
        # Harvest against the mean idle speed of the whole run (the job's speed drifts little),
        # both in units; tokens/s from units at the run's tokens per unit.
        for row in rows:
            row["finetune_tokens_per_s"] = row["finetune_units_per_s"] * (per_unit or 0.0)
            row["harvest"] = row["finetune_units_per_s"] / statistics.mean(idle) if any(idle) else None
        summary["predictor"] = bench.status()["predictor"]
    finally:
        bench.server.stop()

    keys = ("mode", "request_rate", "rep", "seed", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms",
            "ttft_p50_ms", "ttft_p99_ms", "client_tpot_p50_ms", "client_slo_attainment",
            "ttft_text_p50_ms", "ttft_text_p99_ms", "slo_attainment", "server_requests",
            "finetune_tokens_per_s", "finetune_tokens_per_s_counter", "finetune_units_per_s",
            "harvest", "server_harvest", "failed_requests")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{k: r[k] for k in keys} for r in rows], f, indent=2)
    summary.update(summarize(rows, modes, rates, args.reps))
    summary["targets"] = targets(rows, modes, rates, args.reps, summary.get("predictor"))
    summary["rows"] = rows
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot(rows, os.path.join(args.out, "colocation.png"), args.tpot_slo_ms)

    print("\n| mode | rate | rep | TPOT p50 | TPOT p99 | ITL p99 | attainment | finetune tok/s | harvest "
          "| server harvest | TTFT p50 | TTFT p99 | failed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['request_rate']:g} | {r['rep']} | {r['tpot_p50_ms']:.1f} | "
              f"{r['tpot_p99_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['slo_attainment']:.3f} | "
              f"{r['finetune_tokens_per_s']:.1f} | {(r['harvest'] or 0):.2f} | "
              f"{_fmt(r['server_harvest'])} | {r['ttft_p50_ms']:.0f} | "
              f"{r['ttft_p99_ms']:.0f} | {r['failed_requests']} |")
    print(json.dumps({k: summary[k] for k in summary if k not in ("rows", "predictor", "args")},
                     indent=1))


if __name__ == "__main__":
    main()
