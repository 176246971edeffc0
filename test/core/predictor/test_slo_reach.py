"""Whether decode alone fits under the SLO, read from stage 1 at measured batch sizes."""

from __future__ import annotations

import logging

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.slo_reach import CONTEXT_PER_REQUEST, first_batch_over
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


def measured(batch_sizes=range(1, 9)) -> TwoStagePredictor:
    """Stage 1 after the start-up profile: decode alone = 100 + 20 x batch size (ms)."""
    p = TwoStagePredictor()
    for _ in range(8):
        for bs in batch_sizes:
            p.observe(IterationFeatures(bs, bs * CONTEXT_PER_REQUEST), 100.0 + 20.0 * bs, SlotWork())
    return p


def test_the_first_measured_batch_size_over_the_slo_is_named():
    bs, ms = first_batch_over(measured(), 190.0)
    assert bs == 5 and abs(ms - 200.0) < 5.0
    assert first_batch_over(measured(), 400.0) is None      # every measured size fits
    assert first_batch_over(TwoStagePredictor(), 1.0) is None  # nothing measured yet


def test_unmeasured_batch_sizes_prove_nothing():
    # Only 1 and 2 measured: the linear terms would extrapolate past 190 ms at batch 5.
    assert first_batch_over(measured((1, 2)), 190.0) is None


def test_the_coordinator_warns_and_reports_it(caplog):
    cfg = HarliConfig(mode="harli", tpot_slo_ms=190.0).resolved("cpu")
    p = measured()
    coord = SlotCoordinator(cfg, make_policy(cfg, p), p)
    with caplog.at_level(logging.WARNING):
        coord.warn_if_slo_unreachable()
    assert "below decode alone on this host from batch 5" in caplog.text
    assert coord.report()["slo_unreachable_from"]["batch_size"] == 5
