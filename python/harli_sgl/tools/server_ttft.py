"""Time to first token as the server saw it, from SGLang's own histogram.

``sglang.bench_serving`` stamps a request's TTFT at the first streamed chunk
whose text is non-empty. With the byte-level test model (byte-llama-random, the
default before SmolLM2: a vocabulary of 263 tokens, random weights) the first tokens often decode to an
incomplete UTF-8 sequence, so the text stays empty for up to ~24 tokens
(measured: 12 prompts of 128 random ids, greedy, the first text came after
1-24 tokens). Its "TTFT" is then the prefill *plus that many decode
iterations*, and its tail follows TPOT rather than the prefill queue: in the
2026-12-01 co-location run the same four requests had multi-second "TTFTs" in
every mode, scaled by each mode's TPOT.

SGLang records the real first token per request: with ``--enable-metrics`` the
tokenizer manager observes ``first_token_time - created_time`` (receipt of the
request to receipt of its first output batch, streamed or not) into the
``sglang:time_to_first_token_seconds`` histogram. A benchmark run reads the
histogram before and after the load, and the difference is that run's
distribution. :data:`TTFT_BUCKETS_S` (passed as ``--bucket-time-to-first-token``)
is fine enough, 10 ms steps to 1 s, that interpolated quantiles are within one
bucket of the true value.
"""

from __future__ import annotations

import re

import requests

METRIC = "sglang:time_to_first_token_seconds_bucket"
TTFT_BUCKETS_S: tuple[float, ...] = tuple(
    [round(0.01 * i, 2) for i in range(1, 101)]
    + [round(1.0 + 0.05 * i, 2) for i in range(1, 41)]
    + [round(3.0 + 0.25 * i, 2) for i in range(1, 29)] + [15.0, 20.0, 30.0, 60.0])

_LINE = re.compile(r'^' + re.escape(METRIC) + r'\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')
_LE = re.compile(r'le="(?P<le>[^"]+)"')


def server_args() -> list[str]:
    return ["--enable-metrics", "--bucket-time-to-first-token", *map(str, TTFT_BUCKETS_S)]


def parse_buckets(text: str) -> dict[float, float]:
    """Cumulative counts by upper bound, summed over every label set."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        le = _LE.search(m.group("labels"))
        if le is None:
            continue
        bound = float("inf") if le.group("le") == "+Inf" else float(le.group("le"))
        out[bound] = out.get(bound, 0.0) + float(m.group("value"))
    return out


def read_buckets(base_url: str, headers: dict | None = None) -> dict[float, float]:
    r = requests.get(base_url + "/metrics", headers=headers or {}, timeout=60)
    r.raise_for_status()
    return parse_buckets(r.text)


def difference(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in after}


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
        count = buckets[b]
        if count >= rank:
            if b == float("inf"):
                return lo_bound
            inside = count - lo_count
            return lo_bound + (b - lo_bound) * ((rank - lo_count) / inside if inside else 1.0)
        lo_bound, lo_count = b, count
    return lo_bound
