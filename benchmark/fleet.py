"""Fleet benchmark: two instances behind sglang-router and one PostgreSQL queue, against two
standalone instances, under the same load and the same jobs.

    python benchmark/fleet.py --out benchmark/results/<date>-fleet
    python benchmark/fleet.py --out /tmp/f --duration-s 60 --reps 1      # a quick look

Two set-ups, measured one after the other on this machine, in alternating order over
``--reps`` repetitions:

* ``fleet``: PostgreSQL, two harli_sgl instances (``--harli-db``, one shared directory)
  and sglang-router (round robin) in front. ``--jobs`` finetune jobs are submitted to the
  first instance before the load starts; the fleet decides where each runs.
  ``sglang.bench_serving`` sends the whole load to the router.
* ``standalone``: two harli_sgl instances with their own SQLite stores and no router,
  each given half of the jobs and half of the load (two bench_serving clients at half
  the rate, run at the same time).

Each instance decodes on a core of its own (``--harli-cpu-split 0/1`` and ``1/0`` on a
2-core host, and ``--harli-widen-decode never``, since each one's worker share is the other's
decode core) with ``--max-total-tokens 4096``: what two instances on one 2-core, 24 GB
machine can hold, not a limit of the design.

Per set-up and repetition it reports: failed requests (bench_serving's errors plus
requests never completed; target 0), SLO attainment per instance (from the instance's own
request and violation counters over the load, so each instance is judged on the requests
it served), jobs finished during the run, and the finetune tokens/s of the set-up (the sum
of the instances' trained-token counters over the load). The summary gives the ratio
fleet / standalone per repetition and its spread.

Outputs: DIR/results.json (one row per set-up and repetition), DIR/summary.json, logs of
every process under DIR/<setup>-<rep>/, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import requests

from harli_sgl.config import DEFAULT_TPOT_SLO_MS
from harli_sgl.tools import bench_model
from harli_sgl.tools.bench_client import (
    BenchLoad, failed_requests, percentile, request_tpots_ms, run_bench_serving, slo_attainment,
)
from harli_sgl.tools.fleet import INSTANCE_FLAGS, Fleet, crossed_cpu_split
from harli_sgl.tools.server_process import ServerProcess

SETUPS = ("fleet", "standalone")


def training_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Say the number {i} in words, twice."},
                          {"role": "assistant", "content": f"{i} and again {i}, as asked."}]}
            for i in range(n)]


def submit_jobs(base_url: str, n: int, rows: int, epochs: int, model: str) -> list[str]:
    data = "".join(json.dumps(r) + "\n" for r in training_rows(rows)).encode()
    f = requests.post(base_url + "/v1/files", files={"file": ("train.jsonl", data)},
                      data={"purpose": "fine-tune"}, timeout=60).json()
    ids = []
    for _ in range(n):
        job = requests.post(base_url + "/v1/fine_tuning/jobs", timeout=60, json={
            "model": model, "training_file": f["id"],
            "hyperparameters": {"n_epochs": epochs, "batch_size": 8}}).json()
        ids.append(job["id"])
    return ids


def totals(server) -> dict:
    return requests.get(server.base_url + "/harli/status", timeout=60).json()["totals"]


def wait_profiled(server, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = requests.get(server.base_url + "/harli/status", timeout=60).json()
        if s["predictor"]["profiled"] and not s["profiling"]:
            return
        time.sleep(2)
    raise TimeoutError(f"{server.base_url}: the start-up profile did not finish")


def measure(servers, targets, job_ids_at, args) -> dict:
    """Run the load (one bench_serving per target URL, at the same time) and read counters."""
    rate = args.rate / len(targets)
    load = BenchLoad(num_prompts=max(4, round(rate * args.duration_s)), input_len=args.input_len,
                     output_len=args.output_len, request_rate=rate, seed=7)
    before = [totals(s) for s in servers]
    results: list[dict] = [{} for _ in targets]

    def drive(i: int, url: str) -> None:
        results[i] = run_bench_serving(url, args.bench_model.path, load)

    t0 = time.monotonic()
    threads = [threading.Thread(target=drive, args=(i, url)) for i, url in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    statuses = [requests.get(s.base_url + "/harli/status", timeout=60).json() for s in servers]
    after = [st["totals"] for st in statuses]
    per_instance = []
    for b, a, st in zip(before, after, statuses):
        served = a["requests"] - b["requests"]
        violations = a["slo_violations"] - b["slo_violations"]
        per_instance.append({"requests": served,
                             "slo_attainment": (served - violations) / served if served else None,
                             "trained_tokens": a["trained_tokens"] - b["trained_tokens"],
                             # Why an instance trained what it did: its policy's decisions,
                             # arrangement time fractions and predictor state (whole run).
                             "policy": st.get("policy"), "arrangement": st.get("arrangement"),
                             "predictor_mape": (st.get("predictor") or {}).get("stage2_by_arrangement")})
    tpots = [t for r in results for t in request_tpots_ms(r)]
    finished = 0
    for base_url, ids in job_ids_at:
        for job_id in ids:
            job = requests.get(f"{base_url}/v1/fine_tuning/jobs/{job_id}", timeout=60).json()
            finished += job["status"] == "succeeded"
    return {
        "failed_requests": sum(failed_requests(r) + load.num_prompts - r["completed"] for r in results),
        "completed": sum(r["completed"] for r in results),
        "tpot_p50_ms": percentile(tpots, 50), "tpot_p99_ms": percentile(tpots, 99),
        "slo_attainment": slo_attainment(tpots, args.tpot_slo_ms),
        "per_instance": per_instance,
        "finetune_tokens_per_s": sum(p["trained_tokens"] for p in per_instance) / elapsed,
        "load_s": elapsed, "jobs_finished": finished,
    }


def run_fleet(args, root: str) -> dict:
    fleet = Fleet(root, instances=2, extra_flags=("--tpot-slo-ms", str(args.tpot_slo_ms),
                                                  *args.bench_model.server_flags()))
    try:
        fleet.start()
        for s in fleet.servers:
            wait_profiled(s)
        ids = submit_jobs(fleet.servers[0].base_url, args.jobs, args.rows, args.epochs,
                          args.bench_model.served_name)
        time.sleep(args.settle_s)
        row = measure(fleet.servers, [fleet.router.base_url], [(fleet.servers[0].base_url, ids)], args)
        row["jobs_per_instance"] = _jobs_per_instance(fleet, ids)
        return row
    finally:
        fleet.stop()


def _jobs_per_instance(fleet, ids) -> dict:
    import psycopg

    with psycopg.connect(fleet.db_url) as conn:
        rows = conn.execute("SELECT data FROM events WHERE job_id = ANY(%s)", (ids,)).fetchall()
    counts: dict[str, int] = {}
    for (data,) in rows:
        d = json.loads(data) if isinstance(data, str) else (data or {})
        if d.get("status") == "running":
            counts[d.get("lease_owner")] = counts.get(d.get("lease_owner"), 0) + 1
    return counts


def run_standalone(args, root: str) -> dict:
    servers = []
    try:
        for i in range(2):
            # The same crossed splits as the fleet's (and so no widening).
            split = crossed_cpu_split(i)
            servers.append(ServerProcess(
                [*INSTANCE_FLAGS, "--tpot-slo-ms", str(args.tpot_slo_ms),
                 "--harli-workdir", os.path.join(root, f"standalone-{i}"),
                 "--harli-profile-dir", os.path.join(root, "profiles"), *split,
                 *args.bench_model.server_flags()],
                log_path=os.path.join(root, f"standalone-{i}.log")).start())
        for s in servers:
            s.wait_ready()
            wait_profiled(s)
        half = args.jobs // 2
        job_ids = [(s.base_url, submit_jobs(s.base_url, n, args.rows, args.epochs,
                                            args.bench_model.served_name))
                   for s, n in zip(servers, (args.jobs - half, half))]
        time.sleep(args.settle_s)
        return measure(servers, [s.base_url for s in servers], job_ids, args)
    finally:
        for s in servers:
            s.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--model", choices=bench_model.CHOICES, default="smollm2",
                   help="the served and trained model (default: the embedded SmolLM2)")
    p.add_argument("--rate", type=float, default=0.5, help="requests/s for the whole set-up")
    p.add_argument("--duration-s", type=float, default=120.0)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--tpot-slo-ms", type=float, default=DEFAULT_TPOT_SLO_MS["cpu"])
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--settle-s", type=float, default=10.0)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)
    args.bench_model = bench_model.resolve(args.model)
    rows = []
    for rep in range(args.reps):
        order = SETUPS if rep % 2 == 0 else SETUPS[::-1]
        for setup in order:
            root = os.path.join(os.path.abspath(args.out), f"{setup}-{rep}")
            os.makedirs(root, exist_ok=True)
            row = (run_fleet if setup == "fleet" else run_standalone)(args, root)
            row.update(setup=setup, rep=rep)
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump({"args": {k: v for k, v in vars(args).items() if k != "bench_model"},
                           "rows": rows}, f, indent=1)
    ratios = []
    for rep in range(args.reps):
        by = {r["setup"]: r for r in rows if r["rep"] == rep}
        if by.get("standalone", {}).get("finetune_tokens_per_s"):
            ratios.append(by["fleet"]["finetune_tokens_per_s"] / by["standalone"]["finetune_tokens_per_s"])
    summary = {"fleet_over_standalone_tokens_per_s": ratios,
               "median": statistics.median(ratios) if ratios else None,
               "spread": [min(ratios), max(ratios)] if ratios else None,
               "failed_requests": {s: sum(r["failed_requests"] for r in rows if r["setup"] == s)
                                   for s in SETUPS}}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n| setup | rep | failed | SLO attainment per instance | jobs finished | finetune tok/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        att = ", ".join(f"{p['slo_attainment']:.3f}" if p["slo_attainment"] is not None else "-"
                        for p in r["per_instance"])
        print(f"| {r['setup']} | {r['rep']} | {r['failed_requests']} | {att} | {r['jobs_finished']} "
              f"| {r['finetune_tokens_per_s']:.0f} |")
    print(f"\nfleet / standalone finetune tok/s: {summary}")


if __name__ == "__main__":
    main()
