"""Per-request TTFT and TPOT as the server measured them, from SGLang's own histograms.

Benchmarks read latency from the server, not from the client's view of the
stream. ``sglang.bench_serving`` stamps a request's TTFT at the first streamed
chunk whose text is non-empty and computes TPOT from the gaps between visible
chunks, so tokens that decode to no text yet (a byte-level vocabulary's partial
UTF-8, a real tokenizer's pieces held back by the detokenizer) are not counted
where they happened. With the byte-level test model (byte-llama-random) the
first text came 1-24 tokens after the first token (12 prompts, greedy), and
bench_serving's "TTFT" tail tracked TPOT.

With ``--enable-metrics`` SGLang's tokenizer manager observes, per finished
request, ``first_token_time - created_time`` into
``sglang:time_to_first_token_seconds`` and ``(finish - first token) / (tokens
- 1)`` into ``sglang:request_time_per_output_token_seconds``: every generated
token counts, and only requests that finished by ``stop`` or ``length`` are
observed. A benchmark run reads both histograms before and after its load, and
the difference is that run's distribution. The buckets given to the server
(:func:`server_args`) are fine enough that interpolated quantiles are within
one bucket of the true value: TTFT in 10 ms steps to 1 s; TPOT in 1 ms steps to
400 ms, so the SLO attainment of any whole-millisecond SLO up to 400 ms is
exact (:func:`fraction_within`), not interpolated. The TPOT buckets also set
the ``sglang:inter_token_latency_seconds`` histogram's (SGLang uses one flag
for both).
"""

from __future__ import annotations

import re

import requests

TTFT = "sglang:time_to_first_token_seconds"
TPOT = "sglang:request_time_per_output_token_seconds"

TTFT_BUCKETS_S: tuple[float, ...] = tuple(
    [round(0.01 * i, 2) for i in range(1, 101)]
    + [round(1.0 + 0.05 * i, 2) for i in range(1, 41)]
    + [round(3.0 + 0.25 * i, 2) for i in range(1, 29)] + [15.0, 20.0, 30.0, 60.0])
TPOT_BUCKETS_S: tuple[float, ...] = tuple(
    [round(0.001 * i, 3) for i in range(1, 401)]
    + [round(0.4 + 0.01 * i, 2) for i in range(1, 61)]
    + [round(1.0 + 0.25 * i, 2) for i in range(1, 17)] + [10.0, 30.0])

_LE = re.compile(r'le="(?P<le>[^"]+)"')


def server_args() -> list[str]:
    """Flags for both servers a benchmark compares (stock SGLang takes them too)."""
    return ["--enable-metrics",
            "--bucket-time-to-first-token", *map(str, TTFT_BUCKETS_S),
            "--bucket-inter-token-latency", *map(str, TPOT_BUCKETS_S)]


def parse_buckets(text: str, metric: str = TTFT) -> dict[float, float]:
    """Cumulative counts by upper bound of one histogram, summed over every label set."""
    line_re = re.compile(r'^' + re.escape(metric + "_bucket") + r'\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')
    out: dict[float, float] = {}
    for line in text.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        le = _LE.search(m.group("labels"))
        if le is None:
            continue
        bound = float("inf") if le.group("le") == "+Inf" else float(le.group("le"))
        out[bound] = out.get(bound, 0.0) + float(m.group("value"))
    return out


def read(base_url: str, headers: dict | None = None) -> dict[str, dict[float, float]]:
    """Both histograms from one scrape of ``/metrics``: ``{"ttft": ..., "tpot": ...}``."""
    r = requests.get(base_url + "/metrics", headers=headers or {}, timeout=60)
    r.raise_for_status()
    return {"ttft": parse_buckets(r.text, TTFT), "tpot": parse_buckets(r.text, TPOT)}


def read_buckets(base_url: str, headers: dict | None = None) -> dict[float, float]:
    """The TTFT histogram alone."""
    return read(base_url, headers)["ttft"]


def difference(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in after}


def count(buckets: dict[float, float]) -> int:
    return int(round(buckets.get(float("inf"), 0.0)))


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q``-quantile (0-1) in seconds, interpolated linearly inside its bucket
    (Prometheus' ``histogram_quantile``); None when the histogram is empty."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lo_bound, lo_count = 0.0, 0.0
    for b in bounds:
        count_ = buckets[b]
        if count_ >= rank:
            if b == float("inf"):
                return lo_bound
            inside = count_ - lo_count
            return lo_bound + (b - lo_bound) * ((rank - lo_count) / inside if inside else 1.0)
        lo_bound, lo_count = b, count_
    return lo_bound


def fraction_within(buckets: dict[float, float], bound_s: float) -> float | None:
    """The share of observations <= ``bound_s``, exact: the bound must be a bucket edge
    (a whole-millisecond TPOT SLO up to 400 ms is one). None when the histogram is empty."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    edge = next((b for b in buckets if abs(b - bound_s) < 1e-9), None)
    if edge is None:
        raise ValueError(f"{bound_s} s is not a bucket edge; attainment would be interpolated")
    return buckets[edge] / total


def summary(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]],
            tpot_slo_ms: float | None = None) -> dict:
    """One run's server-side figures from two :func:`read` scrapes around it (ms)."""
    ttft, tpot = difference(after["ttft"], before["ttft"]), difference(after["tpot"], before["tpot"])

    def ms(buckets: dict[float, float], q: float) -> float | None:
        v = quantile(buckets, q)
        return None if v is None else 1000.0 * v

    out = {"server_requests": count(tpot), "ttft_p50_ms": ms(ttft, 0.5), "ttft_p99_ms": ms(ttft, 0.99),
           "tpot_p50_ms": ms(tpot, 0.5), "tpot_p99_ms": ms(tpot, 0.99)}
    if tpot_slo_ms is not None:
        out["slo_attainment"] = fraction_within(tpot, tpot_slo_ms / 1000.0)
    return out
