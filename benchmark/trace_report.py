"""Finetune speed by policy and arrangement, from a co-location iteration trace.

    python benchmark/trace_report.py benchmark/results/<run>/trace.jsonl.gz --out <run>/trace_report.json

The trace (``benchmark/colocation.py --trace``) has a row per scheduler iteration
(policy, arrangement, start and end, serial top-up units and ms) and a row per
co-run piece (start, end, units, job). For every policy this reports, over the
iterations that ran while serving (start-up profile excluded):

* ``units_per_ms``: finetune units trained per ms of wall time: co-run pieces
  (pro rata of their overlap with the iteration) plus serial top-ups;
* per arrangement, its share of serving time and its units per ms;
* ``topup_units_per_ms``: serial top-up units per ms of top-up (both cores) and
  ``corun_piece_units_per_ms``: co-run units per ms of piece time on the share,
  the two speeds the ``harli`` policy's top-up rule compares;
* ``alone_by_decision``: why decode ran alone, from traces that record each
  iteration's plan (2026-12-03 on): per decision, its share of serving time, and
  for decode iterations the median target and expected ms it weighed and the
  batch sizes it covered. ``corun_interference_*`` with a negative target is a
  running request already behind its deadline; with a target above decode
  alone, a co-run predicted not to fit.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import json
import statistics


def load(path: str) -> tuple[list[dict], list[dict]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    pieces = sorted((r for r in rows if r.get("piece") and r.get("job_id") is not None),
                    key=lambda p: p["start"])
    iterations = [r for r in rows if "arrangement" in r and not r["profiling"]]
    return iterations, pieces


def report(iterations: list[dict], pieces: list[dict]) -> dict:
    starts = [p["start"] for p in pieces]

    def corun_units(a: float, b: float) -> float:
        units, i = 0.0, bisect.bisect_left(starts, a - 1.0)
        while i < len(pieces) and pieces[i]["start"] < b:
            p = pieces[i]
            if p["end"] > a:
                units += p["units"] * (min(b, p["end"]) - max(a, p["start"])) / (p["end"] - p["start"])
            i += 1
        return units

    out = {}
    for policy in sorted({r["policy"] for r in iterations}):
        wall, units = collections.Counter(), collections.Counter()
        topup_units = topup_ms = 0.0
        for r in (r for r in iterations if r["policy"] == policy):
            serial = r["fwd"] + r["bwd"] + r["head"]
            wall[r["arrangement"]] += (r["t"] - r["t0"]) * 1000.0
            units[r["arrangement"]] += corun_units(r["t0"], r["t"]) + serial
            if r["arrangement"] == "hybrid" and r["serial_ms"] > 0:
                topup_units, topup_ms = topup_units + serial, topup_ms + r["serial_ms"]
        total = sum(wall.values())
        if not total:
            continue
        out[policy] = {
            "iterations": sum(1 for r in iterations if r["policy"] == policy),
            "units_per_ms": sum(units.values()) / total,
            "by_arrangement": {a: {"time_fraction": wall[a] / total,
                                   "units_per_ms": units[a] / wall[a] if wall[a] else None}
                               for a in sorted(wall)},
            "topup_units_per_ms": topup_units / topup_ms if topup_ms else None,
            "alone_by_decision": alone_by_decision(
                [r for r in iterations if r["policy"] == policy], total),
        }
    share = [p for p in pieces if p["share"] < 1.0 and p["end"] > p["start"]]
    out["corun_piece_units_per_ms"] = (sum(p["units"] for p in share)
                                       / (1000.0 * sum(p["end"] - p["start"] for p in share))
                                       if share else None)
    return out


def alone_by_decision(iterations: list[dict], total_ms: float) -> dict:
    """Why decode ran alone: time, and what was weighed, per decision (see the docstring)."""
    by: dict[str, list[dict]] = collections.defaultdict(list)
    for r in iterations:
        if r["arrangement"] == "none" and "decision" in r:
            by[r["decision"] or "(no plan)"].append(r)

    def median(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None
    out = {}
    for decision, rs in sorted(by.items(), key=lambda kv: -sum(r["t"] - r["t0"] for r in kv[1])):
        decode = [r for r in rs if not r["ext"]]
        out[decision] = {
            "time_fraction": sum(r["t"] - r["t0"] for r in rs) * 1000.0 / total_ms,
            "iterations": len(rs), "prefill_iterations": len(rs) - len(decode),
            "target_ms_p50": median([r["target_ms"] for r in decode if r["target_ms"] is not None]),
            "expected_ms_p50": median([r["expected_ms"] for r in decode
                                       if r["expected_ms"] is not None]),
            "batch_sizes": sorted({r["bs"] for r in decode}),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    result = report(*load(args.trace))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
