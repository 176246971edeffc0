"""The coordinator's own wiring: what it measures reaches the policy's feedback."""

from __future__ import annotations

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import CostKind, IterationFeatures, SlotWork
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


BATCH = IterationFeatures(batch_size=1, context_tokens=64)


def coordinator(decode_alone_ms: float | None = None) -> SlotCoordinator:
    """``decode_alone_ms``: what stage 1 has learned ``BATCH`` takes alone (else nothing)."""
    cfg = HarliConfig(mode="harli-serial", tpot_slo_ms=100.0).resolved("cpu")
    predictor = TwoStagePredictor()
    for _ in range(50 if decode_alone_ms is not None else 0):
        predictor.observe(BATCH, decode_alone_ms, SlotWork())
    return SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, supervisor=None)


def one_request(c: SlotCoordinator, rid: str, with_slot: bool, t0: float) -> None:
    """A request decoding 5 tokens 110 ms apart (above the 100 ms SLO), one launch per token;
    ``with_slot``: a serial slot ran after each of its iterations."""
    for k in range(5):
        now = t0 + 0.11 * k
        c.on_launch(BATCH, now)
        c.on_tokens([(rid, k + 1, k == 4)], now + 0.1)
        if with_slot:
            c.meter.add_work(SlotWork().plus(CostKind.LAYER_FORWARD, 2))
    c.on_idle(0)


def test_only_a_near_miss_with_finetune_work_beside_it_backs_beta_off():
    c = coordinator(decode_alone_ms=90.0)
    one_request(c, "decode-alone", with_slot=False, t0=0.0)
    assert c.policy.beta == 1.0  # the host was slow; no slot was to blame
    # Stage 1 says decode alone takes about 90 ms: the slots added about 20 ms a token.
    one_request(c, "beside-slots", with_slot=True, t0=10.0)
    assert c.policy.beta < 1.0


def test_work_is_blamed_only_for_the_time_it_added_beyond_stage_ones_decode_alone():
    # Decode alone was already 108 of the 110 ms: the slots added 2 ms a token, under the
    # policy's noise floor (3% of the SLO), so the near miss is decode's own.
    c = coordinator(decode_alone_ms=108.0)
    assert abs(c.predictor.predict_decode(BATCH) - 108.0) < 1.0
    one_request(c, "beside-slots", with_slot=True, t0=0.0)
    assert c.policy.beta == 1.0
