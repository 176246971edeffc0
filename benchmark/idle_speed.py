"""How fast does the idle server train, and does what ran before change it?

A diagnostic for the harvest denominator (docs/benchmarks.md §S1g, where the two idle
measurements taken right after a ``harli`` run read about half of the other two). One
SmolLM2 server with the co-location benchmark's job; the ``idle`` policy's training speed
(units/s, the benchmark's denominator) is measured over 20 s windows: after start-up,
after ``harli`` idled (co-running on the idle server), after ``off``, and after ``harli``
served 30 s of requests (0.25 req/s); ``harli``'s own idle co-run speed is measured too.
Each window also records every process's CPU use and the worker threads' scheduling class
(0 normal, 5 SCHED_IDLE), cores and CPU use, from /proc.

    PYTHONPATH=python .venv/bin/python benchmark/idle_speed.py --out benchmark/results/<date>-idle-speed
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

from colocation import Bench  # benchmark/ is on sys.path when run as a script


def cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (name, user + system clock ticks) of every process."""
    out = {}
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        out[int(d[6:])] = (st[st.index("(") + 1:st.rindex(")")], int(fields[11]) + int(fields[12]))
    return out


def threads(pid: int) -> list[tuple[int, int, list[int], int]]:
    """(tid, scheduling policy, cores, clock ticks) of each thread of ``pid``."""
    rows = []
    for t in glob.glob(f"/proc/{pid}/task/*"):
        tid = int(t.rsplit("/", 1)[1])
        try:
            with open(t + "/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            rows.append((tid, int(fields[38]), sorted(os.sched_getaffinity(tid)),
                         int(fields[11]) + int(fields[12])))
        except OSError:
            continue
    return rows


def window(bench: Bench, label: str, seconds: float = 20.0) -> dict:
    st = bench.status()
    pid = st["worker"]["pid"]
    p0, t0, u0 = cpu_ticks(), time.monotonic(), st["totals"]["units"]
    th0 = {tid: ticks for tid, _, _, ticks in threads(pid)}
    time.sleep(seconds)
    st = bench.status()
    p1, t1, u1 = cpu_ticks(), time.monotonic(), st["totals"]["units"]
    span = t1 - t0
    busiest = sorted(((p1[k][1] - p0[k][1]) / span, p1[k][0]) for k in p1
                     if k in p0 and p1[k][1] > p0[k][1])[-6:]
    worker = [(tid, policy, cores, round((ticks - th0.get(tid, ticks)) / span))
              for tid, policy, cores, ticks in threads(pid)]
    row = {"label": label, "units_per_s": round((u1 - u0) / span),
           "busy_ticks_per_s": busiest,  # 100 ticks/s = one core
           "worker_threads_busy": [w for w in worker if w[3] > 0]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(argparse.Namespace(out=args.out, tpot_slo_ms=310.0, model="smollm2", trace=False,
                                     settle_s=3.0, input_len=128, output_len=64, seed=0))
    rows = []
    try:
        bench.start()
        bench.set_mode("idle"); time.sleep(3)
        rows.append(window(bench, "idle after start"))
        bench.set_mode("harli"); time.sleep(3)
        rows.append(window(bench, "harli idle (idle_corun)"))
        bench.set_mode("idle"); time.sleep(3)
        rows.append(window(bench, "idle after harli idle"))
        bench.set_mode("off"); time.sleep(3)
        bench.set_mode("idle"); time.sleep(3)
        rows.append(window(bench, "idle after off"))
        served = bench.run("harli", 0.25, 30)
        print(json.dumps({"harli run units/s": served["finetune_units_per_s"]}), flush=True)
        bench.set_mode("idle"); time.sleep(3)
        rows.append(window(bench, "idle after harli serving"))
        rows.append(window(bench, "idle after harli serving, 20 s later"))
    finally:
        bench.server.stop()
    with open(os.path.join(args.out, "windows.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
