"""Drive ``python -m sglang.bench_serving`` and read back what it measured.

Benchmarks never time requests themselves: they run SGLang's own client in a
subprocess (exactly what an operator would run), ask it for per-request details
and derive everything from its JSON. Per-request TPOT is computed the way
bench_serving computes it, ``(latency - ttft) / (output_len - 1)``, i.e. the sum
of a request's inter-token latencies over their count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BenchLoad:
    num_prompts: int = 32
    input_len: int = 128
    output_len: int = 128
    request_rate: float = float("inf")
    max_concurrency: int | None = None
    seed: int = 1
    # bench_serving's own warm-up request runs before the load and reaches the server's
    # histograms too; benchmarks that read those warm the server themselves and pass 0.
    warmup_requests: int = 1


def run_bench_serving(base_url: str, model_path: str, load: BenchLoad, *,
                      api_key: str | None = None, timeout_s: float = 3600,
                      backend: str = "sglang") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.jsonl")
        cmd = [sys.executable, "-m", "sglang.bench_serving", "--backend", backend,
               "--base-url", base_url, "--dataset-name", "random-ids",
               "--num-prompts", str(load.num_prompts), "--random-input-len", str(load.input_len),
               "--random-output-len", str(load.output_len), "--random-range-ratio", "1.0",
               "--request-rate", str(load.request_rate), "--tokenizer", model_path,
               "--model", model_path, "--seed", str(load.seed), "--output-file", out,
               "--output-details", "--disable-tqdm",
               "--warmup-requests", str(load.warmup_requests)]
        if load.max_concurrency is not None:
            cmd += ["--max-concurrency", str(load.max_concurrency)]
        env = {**os.environ, **({"OPENAI_API_KEY": api_key} if api_key else {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"bench_serving failed ({proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        with open(out) as f:
            return json.loads(f.read().splitlines()[-1])


def request_tpots_ms(result: dict) -> list[float]:
    """Per-request TPOT (ms) of the requests that produced at least two tokens."""
    tpots = []
    for itls, n in zip(result["itls"], result["output_lens"]):
        if n and n > 1 and itls:
            tpots.append(1000.0 * sum(itls) / (n - 1))
    return tpots


def token_itls_ms(result: dict) -> list[float]:
    """Every inter-token latency (ms) of every request: per-token ITL, not per-request TPOT."""
    return [1000.0 * x for itls in result["itls"] for x in (itls or [])]


def failed_requests(result: dict) -> int:
    return sum(1 for e in result.get("errors", []) if e)


def slo_attainment(tpots_ms: list[float], slo_ms: float) -> float | None:
    return sum(t <= slo_ms for t in tpots_ms) / len(tpots_ms) if tpots_ms else None


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
