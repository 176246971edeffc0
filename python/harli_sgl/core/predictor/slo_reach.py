"""Whether the TPOT SLO is one decode alone can meet on this host.

The SLO is the operator's, but it is only a guarantee where decode alone fits
under it: a batch whose decode iteration already takes longer misses it with no
finetuning at all, and no policy can help. The right SLO is a property of the
host (on SmolLM2, stock SGLang's batch-8 TPOT was 149 ms on one core of the Xeon
host and 246 ms on the EPYC one, docs/benchmarks.md §S0 and §S1c), so a default
measured on one host can be unreachable on another: the 190 ms CPU default is
below decode alone from batch 2 on the EPYC host.

Stage 1 already knows decode alone on decode's cores, from the start-up profile
on. :func:`first_batch_over` reads it at the batch sizes stage 1 has measured
(only those: an extrapolated batch size proves nothing) and names the smallest
whose predicted decode exceeds the SLO; the coordinator logs a warning with it
and ``/harli/status`` reports it, so an operator sees at start-up that the SLO
cannot hold from that batch on, and why.
"""

from __future__ import annotations

from harli_sgl.core.iteration import IterationFeatures
from harli_sgl.core.predictor.base import LatencyPredictor

# Context per request the check assumes: a short chat (128 in, 64 out, as the
# benchmarks send); attention is a small part of a decode iteration at these lengths.
CONTEXT_PER_REQUEST = 192
MAX_BATCH = 64


def first_batch_over(predictor: LatencyPredictor, slo_ms: float,
                     max_batch: int = MAX_BATCH) -> tuple[int, float] | None:
    """(batch size, predicted decode ms) of the smallest measured batch size whose decode
    alone is predicted above ``slo_ms``; None if none is (or stage 1 is not ready)."""
    if not predictor.ready(1):
        return None
    for bs in range(1, max_batch + 1):
        f = IterationFeatures(bs, bs * CONTEXT_PER_REQUEST)
        if not predictor.confident(f):
            continue
        ms = predictor.predict_decode(f)
        if ms > slo_ms:
            return bs, ms
    return None
