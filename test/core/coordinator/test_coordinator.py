"""The coordinator's own wiring: what it measures reaches the policy's feedback."""

from __future__ import annotations

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import CostKind, IterationFeatures, SlotWork
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


def coordinator() -> SlotCoordinator:
    cfg = HarliConfig(mode="harli-serial", tpot_slo_ms=100.0).resolved("cpu")
    predictor = TwoStagePredictor()
    return SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, supervisor=None)


def one_request(c: SlotCoordinator, rid: str, with_slot: bool, t0: float) -> None:
    """A request decoding 5 tokens 110 ms apart (above the 100 ms SLO), one launch per token;
    ``with_slot``: a serial slot ran after each of its iterations."""
    batch = IterationFeatures(batch_size=1, context_tokens=64)
    for k in range(5):
        now = t0 + 0.11 * k
        c.on_launch(batch, now)
        c.on_tokens([(rid, k + 1, k == 4)], now + 0.1)
        if with_slot:
            c.meter.add_work(SlotWork().plus(CostKind.LAYER_FORWARD, 2))
    c.on_idle(0)


def test_only_a_near_miss_with_finetune_work_beside_it_backs_beta_off():
    c = coordinator()
    one_request(c, "decode-alone", with_slot=False, t0=0.0)
    assert c.policy.beta == 1.0  # the host was slow; no slot was to blame
    one_request(c, "beside-slots", with_slot=True, t0=10.0)
    assert c.policy.beta < 1.0
