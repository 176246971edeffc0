"""The two-stage decode-latency predictor.

Stage 1 predicts the cadence of a scheduler iteration when decode runs alone,
from ``[1, batch size, context tokens, extend tokens, is-extend, extend
attention]`` plus a batch-size bucket indicator for decode iterations: weights are read once per
iteration (the constant), per-request work grows with the batch, attention
with the context, prefill/extend work with the extend tokens and, for its
attention, with extend x sequence length (mixed iterations carry both); the buckets capture the non-linear steps of real
kernels. Stage 2 predicts how much longer the iteration
gets when a finetune slot runs inside it, as a function of the slot's units
per cost kind (layer forward, layer backward, head), fitted on the *residual*
``observed - stage1``: in serial mode that residual is the slot itself plus
the interference it leaves behind (cold caches, thread wake-up), which the
model learns as it happens.

Both stages are :class:`OnlineLinearModel`s: fitted by the start-up profile,
refined online from every measured iteration, persisted between restarts, and
scored by prospective MAPE on held-out iterations.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.predictor.linear import OnlineLinearModel

STATE_FORMAT = 4
N_LINEAR = 6
# Decode time is not linear in the batch size (kernels switch between GEMV and
# GEMM shapes; measured on the CPU host: 16 ms at 1, ~23 ms from 2 to 9, ~50 ms
# from 10). Per-bucket indicators, pulled toward zero by the ridge, learn that
# shape where data exists while the linear terms cover unseen batch sizes.
N_BUCKETS = 32
BUCKET_EDGES = (24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072)
# Samples before a stage is trusted with busy-time decisions.
STAGE1_MIN_SAMPLES = 30
STAGE2_MIN_SAMPLES = 12
MIN_BUCKET_SAMPLES = 5


def batch_bucket(batch_size: int) -> int:
    """Exact buckets for 1..16, then half-octaves (17-24, 25-32, 33-48, ...)."""
    if batch_size <= 16:
        return batch_size - 1
    return min(16 + bisect.bisect_left(BUCKET_EDGES, batch_size), N_BUCKETS - 1)


def stage1_features(f: IterationFeatures) -> list[float]:
    x = [1.0, float(f.batch_size), f.context_tokens / 1000.0, f.extend_tokens / 1000.0,
         1.0 if f.extend_tokens else 0.0, f.extend_attention / 1e6] + [0.0] * N_BUCKETS
    if not f.extend_tokens and f.batch_size > 0:
        x[N_LINEAR + batch_bucket(f.batch_size)] = 1.0
    return x


def stage2_features(w: SlotWork) -> list[float]:
    return [1.0, w.units_fwd / 1000.0, w.units_bwd / 1000.0, w.units_head / 1000.0]


class TwoStagePredictor(LatencyPredictor):
    name = "two_stage_linear"

    def __init__(self, forget: float = 0.999):
        self.stage1 = OnlineLinearModel(N_LINEAR + N_BUCKETS, forget=forget)
        self.stage2 = OnlineLinearModel(4, forget=forget)
        self.profiled = False
        self._corun_errors: deque[float] = deque(maxlen=500)
        self.bucket_samples = [0] * N_BUCKETS

    @property
    def samples(self) -> int:
        return self.stage1.samples + self.stage2.samples

    def predict_decode(self, f: IterationFeatures) -> float:
        return self.stage1.predict(stage1_features(f))

    def slot_cost(self, w: SlotWork) -> float:
        return self.stage2.predict(stage2_features(w)) if w.units else 0.0

    def predict_corun(self, f: IterationFeatures, w: SlotWork) -> float:
        return self.predict_decode(f) + self.slot_cost(w)

    def observe(self, f: IterationFeatures, interval_ms: float, w: SlotWork) -> None:
        if w.units == 0:
            self.stage1.observe(stage1_features(f), interval_ms)
            if not f.extend_tokens and f.batch_size > 0:
                self.bucket_samples[batch_bucket(f.batch_size)] += 1
        else:
            predicted = self.predict_corun(f, w)
            held_out = self.stage2.observe(stage2_features(w), interval_ms - self.predict_decode(f))
            if held_out and interval_ms > 0:
                self._corun_errors.append(abs(predicted - interval_ms) / interval_ms)

    def stage2_mape(self) -> float | None:
        """MAPE of the full co-run prediction (stage1 + stage2) on held-out slot iterations.

        Stage 2's own model predicts a residual, which can be near zero; its error
        relative to the whole iteration is what the SLO sees, so that is reported.
        """
        return float(np.mean(self._corun_errors)) if self._corun_errors else None

    def reset_errors(self) -> None:
        self.stage1.reset_errors()
        self.stage2.reset_errors()
        self._corun_errors.clear()

    def confident(self, f: IterationFeatures) -> bool:
        """Whether stage 1 has seen this iteration's batch-size bucket often enough."""
        return f.batch_size == 0 or f.extend_tokens > 0 or \
            self.bucket_samples[batch_bucket(f.batch_size)] >= MIN_BUCKET_SAMPLES

    def ready(self, stage: int) -> bool:
        if stage == 1:
            return self.stage1.samples >= STAGE1_MIN_SAMPLES
        return self.stage2.samples >= STAGE2_MIN_SAMPLES

    def status(self) -> dict:
        def one(m: OnlineLinearModel, mape: float | None) -> dict:
            return {"mape": mape, "samples": m.samples, "heldout": m.heldout,
                    "weights": [round(v, 6) for v in m.w]}
        return {"name": self.name, "profiled": self.profiled,
                "stage1": one(self.stage1, self.stage1.mape),
                "stage2": one(self.stage2, self.stage2_mape())}

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "profiled": self.profiled,
                "stage1": self.stage1.state_dict(), "stage2": self.stage2.state_dict(),
                "bucket_samples": self.bucket_samples}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported predictor state format {state.get('format')!r}")
        self.stage1.load_state_dict(state["stage1"])
        self.stage2.load_state_dict(state["stage2"])
        self.profiled = bool(state.get("profiled"))
        self.bucket_samples = list(state["bucket_samples"])
