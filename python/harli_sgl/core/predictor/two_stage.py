"""The two-stage decode-latency predictor.

Stage 1 predicts the cadence of a scheduler iteration when decode runs alone,
from ``[1, batch size, context tokens, extend tokens, is-extend, extend
attention]`` plus a batch-size bucket indicator for decode iterations: weights are read once per
iteration (the constant), per-request work grows with the batch, attention
with the context, prefill/extend work with the extend tokens and, for its
attention, with extend x sequence length (mixed iterations carry both); the buckets capture the non-linear steps of real
kernels. A placement term (decode widened onto every core, a CPU host's choice
when nothing trains beside it) lets stage 1 learn from those iterations as well
and still predict decode on its own cores; a bucket with too few samples is
interpolated between its measured neighbours. Stage 2 predicts how much longer the iteration
gets when a finetune slot runs inside it, as a function of the slot's units
per cost kind (layer forward, layer backward, head), fitted on the *residual*
``observed - stage1``: in serial mode that residual is the slot itself plus
the interference it leaves behind (cold caches, thread wake-up), which the
model learns as it happens.

Stage 2 has one model per arrangement. *Serial*: the residual above, by slot
units. *Concurrent*: how much slower decode runs while the worker trains beside
it on its own share (one model per share): the residual ``observed - stage1``
of an iteration that overlapped worker pieces, on the stage-1 features scaled
by the overlapped fraction (interference grows steeply with the batch: the
measured 2-core host goes from +12% at batch 1 to 3x at batch 8, which the
bucket indicators capture) plus the fraction overlapped by backward and head
pieces (the kind running beside). A *hybrid* iteration is both: its decode part
feeds the concurrent model, and its prediction is the sum.

All models are :class:`OnlineLinearModel`s: fitted by the start-up profile,
refined online from every measured iteration, persisted between restarts, and
scored by prospective MAPE on held-out iterations, per arrangement.

It stays whole at about 340 lines: the two stages share their features, their
held-out scoring and one persisted state, and splitting them would put one
prediction's arithmetic in two files.
"""

from __future__ import annotations

import bisect
import time
from collections import deque

import numpy as np

from harli_sgl.core.iteration import CoRunOverlap, IterationFeatures, SlotWork
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.predictor.linear import OnlineLinearModel

STATE_FORMAT = 6
N_LINEAR = 8
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


def bucket_batch_size(bucket: int) -> int:
    """The smallest batch size in ``bucket`` (the inverse of :func:`batch_bucket`)."""
    return bucket + 1 if bucket < 16 else (BUCKET_EDGES[bucket - 17] + 1 if bucket > 16 else 17)


def stage1_features(f: IterationFeatures, wide: bool = False) -> list[float]:
    """``wide``: the batch ran on every core rather than on decode's own (a placement term,
    constant and per request, so one model learns both and predicts decode's cores)."""
    w = 1.0 if wide else 0.0
    x = [1.0, float(f.batch_size), f.context_tokens / 1000.0, f.extend_tokens / 1000.0,
         1.0 if f.extend_tokens else 0.0, f.extend_attention / 1e6,
         w, w * f.batch_size] + [0.0] * N_BUCKETS
    if not f.extend_tokens and f.batch_size > 0:
        x[N_LINEAR + batch_bucket(f.batch_size)] = 1.0
    return x


def stage2_features(w: SlotWork) -> list[float]:
    return [1.0, w.units_fwd / 1000.0, w.units_bwd / 1000.0, w.units_head / 1000.0]


def concurrent_features(f: IterationFeatures, o: CoRunOverlap) -> list[float]:
    return [o.bwd, o.head] + [o.total * v for v in stage1_features(f)]


# Worst case when the kind beside decode is not known in advance: all backward.
FULL_OVERLAP_BWD = CoRunOverlap(bwd=1.0)
N_CONCURRENT = 2 + N_LINEAR + N_BUCKETS
# Co-run samples of a batch-size bucket before co-running there is trusted.
MIN_CONCURRENT_BUCKET_SAMPLES = 3
# The median of the recent concurrent residuals of decode iterations is a fast
# bias correction: a co-run that suddenly runs slower than modelled (a
# neighbour, a misplaced thread) is answered within a few iterations, long
# before the forgetting fit follows. The median, not the mean: one stalled
# iteration (a page fault, the detokenizer taking the core) must not shrink the
# next six top-ups, and half the window must be slow before it moves. Prefill
# iterations stay out: their residuals scale with the prompt (a 3-request
# prefill predicted 5.3 s ran 585 ms in the 2026-12-01 trace) and say nothing
# about the next decode iteration. Entries expire, so a policy that stopped
# co-running because of them tries again later instead of never.
BIAS_WINDOW = 6
BIAS_EXPIRE_S = 60.0


def share_key(share: float) -> str:
    return f"{share:.3f}"


class TwoStagePredictor(LatencyPredictor):
    name = "two_stage_linear"

    def __init__(self, forget: float = 0.999):
        self.stage1 = OnlineLinearModel(N_LINEAR + N_BUCKETS, forget=forget)
        # More units of any kind never cost less time (see OnlineLinearModel.nonneg).
        self.stage2 = OnlineLinearModel(4, forget=forget, nonneg=(1, 2, 3))
        self.profiled = False
        self._corun_errors: deque[float] = deque(maxlen=500)
        self.bucket_samples = [0] * N_BUCKETS
        self.concurrent: dict[str, OnlineLinearModel] = {}
        self.concurrent_bucket_samples: dict[str, list[int]] = {}
        self._concurrent_errors: deque[float] = deque(maxlen=500)
        self._hybrid_errors: deque[float] = deque(maxlen=500)
        # (when, decode ms, features, concurrent features) of recent decode co-run iterations.
        self._concurrent_recent: dict[str, deque[tuple]] = {}
        self.forget = forget

    @property
    def samples(self) -> int:
        return self.stage1.samples + self.stage2.samples + \
            sum(m.samples for m in self.concurrent.values())

    def _concurrent_model(self, share: float) -> OnlineLinearModel:
        key = share_key(share)
        if key not in self.concurrent:
            self.concurrent[key] = OnlineLinearModel(N_CONCURRENT, forget=self.forget)
            self.concurrent_bucket_samples[key] = [0] * N_BUCKETS
        return self.concurrent[key]

    def interference(self, f: IterationFeatures, share: float,
                     overlap: CoRunOverlap = FULL_OVERLAP_BWD) -> float:
        """Extra decode time from training beside it on ``share`` (0 when no model yet)."""
        key = share_key(share)
        model = self.concurrent.get(key)
        if model is None:
            return 0.0
        bias = self.concurrent_bias(share)
        # Training beside decode never makes it faster: a negative fit is extrapolation.
        return max(0.0, model.predict(concurrent_features(f, overlap))) + \
            max(0.0, bias) * overlap.total

    def concurrent_bias(self, share: float, now: float | None = None) -> float:
        """Median of the recent decode co-run residuals, unexpired.

        Each residual is the observed decode time less the *current* model's
        prediction without the bias (stage 1 plus the fitted interference), so the
        bias measures only what the fit does not yet hold: a lasting shift is
        corrected in full within half the window, and the bias fades as the fit follows it.
        """
        key = share_key(share)
        recent = self._concurrent_recent.get(key)
        if not recent:
            return 0.0
        now = time.monotonic() if now is None else now
        while recent and now - recent[0][0] > BIAS_EXPIRE_S:
            recent.popleft()
        model = self.concurrent.get(key)  # (a loaded state may lack this share)
        if not recent or model is None:
            return 0.0
        return float(np.median([decode_ms - self.predict_decode(f) - max(0.0, model.predict(x))
                                for _, decode_ms, f, x in recent]))

    def predict_concurrent(self, f: IterationFeatures, share: float) -> float:
        """Decode latency with the worker training beside it for the whole iteration."""
        return self.predict_decode(f) + self.interference(f, share)

    def concurrent_confident(self, f: IterationFeatures, share: float) -> bool:
        """Whether co-running at this batch-size bucket and share has been measured enough."""
        counts = self.concurrent_bucket_samples.get(share_key(share))
        if counts is None:
            return False
        if f.batch_size == 0 or f.extend_tokens:
            return sum(counts) >= MIN_CONCURRENT_BUCKET_SAMPLES
        return counts[batch_bucket(f.batch_size)] >= MIN_CONCURRENT_BUCKET_SAMPLES

    def observe_concurrent(self, f: IterationFeatures, decode_ms: float, overlap: CoRunOverlap,
                           serial: SlotWork | None = None, interval_ms: float | None = None) -> None:
        """An iteration whose decode (``decode_ms``, top-up excluded) overlapped worker pieces.

        ``serial``/``interval_ms`` describe a hybrid iteration's top-up and whole
        interval, scored against the hybrid prediction.
        """
        if overlap.total <= 0:
            return
        key = share_key(overlap.share)
        model = self._concurrent_model(overlap.share)
        x = concurrent_features(f, overlap)
        alone = self.predict_decode(f)
        predicted = alone + self.interference(f, overlap.share, overlap)
        if serial is not None and serial.units and interval_ms:
            hybrid_predicted = predicted + self.slot_cost(serial)
            self._hybrid_errors.append(abs(hybrid_predicted - interval_ms) / interval_ms)
        residual = decode_ms - alone
        if f.batch_size > 0 and not f.extend_tokens:
            # Kept raw and scored against the current model when the bias is read (see
            # concurrent_bias): against ``predicted``, which already held the bias, each
            # residual undid the last and a lasting shift was never caught.
            recent = self._concurrent_recent.setdefault(key, deque(maxlen=BIAS_WINDOW))
            recent.append((time.monotonic(), decode_ms, f, x))
        held_out = model.observe(x, residual)
        if held_out and decode_ms > 0:
            self._concurrent_errors.append(abs(predicted - decode_ms) / decode_ms)
        if f.batch_size > 0 and not f.extend_tokens:
            self.concurrent_bucket_samples[key][batch_bucket(f.batch_size)] += 1

    def predict_decode(self, f: IterationFeatures, wide: bool = False) -> float:
        if f.extend_tokens or f.batch_size == 0:
            return self._raw(f, wide)
        b = batch_bucket(f.batch_size)
        if self.bucket_samples[b] >= MIN_BUCKET_SAMPLES:
            return self._raw(f, wide)
        # A bucket with too few samples has a weight the ridge still holds near 0, so
        # its prediction fell to about batch 1's: 100 ms for batch 9-12 that ran 250-350
        # ms in the 2026-12-02 trace. Decode time is smooth in the batch size between the
        # kernels' steps: interpolate between the nearest trusted batch sizes (at this
        # iteration's context per request), or hold the nearest one's level beyond them.
        lo, hi = self._trusted_neighbours(b)
        if lo is None and hi is None:
            return self._raw(f, wide)
        per_request = f.context_tokens / f.batch_size

        def at(k: int) -> float:
            bs = bucket_batch_size(k)
            return self._raw(IterationFeatures(bs, round(per_request * bs)), wide)
        if lo is None or hi is None:
            return at(lo if hi is None else hi)
        a, z = bucket_batch_size(lo), bucket_batch_size(hi)
        return at(lo) + (at(hi) - at(lo)) * (f.batch_size - a) / (z - a)

    def _raw(self, f: IterationFeatures, wide: bool) -> float:
        return self.stage1.predict(stage1_features(f, wide))

    def _trusted_neighbours(self, b: int) -> tuple[int | None, int | None]:
        trusted = [k for k in range(N_BUCKETS) if self.bucket_samples[k] >= MIN_BUCKET_SAMPLES]
        return (max((k for k in trusted if k < b), default=None),
                min((k for k in trusted if k > b), default=None))

    def slot_cost(self, w: SlotWork) -> float:
        # The intercept is free (stage 1 can over-predict an iteration), but a slot
        # never makes one shorter: a negative cost would pass any budget check.
        return max(0.0, self.stage2.predict(stage2_features(w))) if w.units else 0.0

    def predict_corun(self, f: IterationFeatures, w: SlotWork, wide: bool = False) -> float:
        return self.predict_decode(f, wide) + self.slot_cost(w)

    def observe(self, f: IterationFeatures, interval_ms: float, w: SlotWork,
                wide: bool = False) -> None:
        if w.units == 0:
            self.stage1.observe(stage1_features(f, wide), interval_ms,
                                scored=self.predict_decode(f, wide))
            if not f.extend_tokens and f.batch_size > 0:
                self.bucket_samples[batch_bucket(f.batch_size)] += 1
        else:
            alone = self.predict_decode(f, wide)
            predicted = alone + self.slot_cost(w)
            held_out = self.stage2.observe(stage2_features(w), interval_ms - alone)
            if held_out and interval_ms > 0:
                self._corun_errors.append(abs(predicted - interval_ms) / interval_ms)

    def stage2_mape(self) -> float | None:
        """MAPE of the full co-run prediction (stage1 + stage2) on held-out slot iterations.

        Stage 2's own model predicts a residual, which can be near zero; its error
        relative to the whole iteration is what the SLO sees, so that is reported.
        """
        return float(np.mean(self._corun_errors)) if self._corun_errors else None

    def concurrent_mape(self) -> float | None:
        return float(np.mean(self._concurrent_errors)) if self._concurrent_errors else None

    def hybrid_mape(self) -> float | None:
        return float(np.mean(self._hybrid_errors)) if self._hybrid_errors else None

    def reset_errors(self) -> None:
        self.stage1.reset_errors()
        self.stage2.reset_errors()
        self._corun_errors.clear()
        self._concurrent_errors.clear()
        self._hybrid_errors.clear()
        for m in self.concurrent.values():
            m.reset_errors()

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
        concurrent = {k: {"mape": m.mape, "samples": m.samples, "heldout": m.heldout}
                      for k, m in self.concurrent.items()}
        return {"name": self.name, "profiled": self.profiled,
                "stage1": one(self.stage1, self.stage1.mape),
                "stage2": one(self.stage2, self.stage2_mape()),
                # Stage 2 per arrangement: held-out MAPE of the whole iteration's prediction.
                "stage2_by_arrangement": {
                    "serial": {"mape": self.stage2_mape(), "samples": self.stage2.samples},
                    "concurrent": {"mape": self.concurrent_mape(),
                                   "samples": sum(m.samples for m in self.concurrent.values()),
                                   "by_share": concurrent},
                    "hybrid": {"mape": self.hybrid_mape(), "samples": len(self._hybrid_errors)},
                }}

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "profiled": self.profiled,
                "stage1": self.stage1.state_dict(), "stage2": self.stage2.state_dict(),
                "bucket_samples": self.bucket_samples,
                "concurrent": {k: m.state_dict() for k, m in self.concurrent.items()},
                "concurrent_bucket_samples": self.concurrent_bucket_samples}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported predictor state format {state.get('format')!r}")
        self.stage1.load_state_dict(state["stage1"])
        self.stage2.load_state_dict(state["stage2"])
        self.profiled = bool(state.get("profiled"))
        self.bucket_samples = list(state["bucket_samples"])
        self.concurrent, self.concurrent_bucket_samples = {}, {}
        for key, model_state in state.get("concurrent", {}).items():
            model = OnlineLinearModel(N_CONCURRENT, forget=self.forget)
            model.load_state_dict(model_state)
            self.concurrent[key] = model
            self.concurrent_bucket_samples[key] = list(state["concurrent_bucket_samples"][key])
