"""The harli policy against a real predictor fed with a known latency law."""

from __future__ import annotations

import numpy as np
import pytest

from harli_sgl.config import HarliConfig
from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.policy.base import SlotContext
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor

SLO = 100.0
PIECES = tuple([(0, 256)] * 8 + [(2, 256), (2, 512)] + [(1, 512)] * 8)


def decode_ms(f):
    return 10.0 + 3.0 * f.batch_size + 0.002 * f.context_tokens


def slot_ms(w):
    return 0.5 + 0.04 * w.units_fwd + 0.02 * w.units_bwd + 0.004 * w.units_head


@pytest.fixture
def trained():
    rng = np.random.default_rng(0)
    p = TwoStagePredictor()
    for i in range(800):
        bs = int(rng.integers(1, 33))
        f = IterationFeatures(bs, bs * 300)
        w = SlotWork(256 * int(rng.integers(0, 5)), 512 * int(rng.integers(0, 3)),
                     256 * int(rng.integers(0, 3)), 2) if i % 2 else SlotWork()
        p.observe(f, (decode_ms(f) + (slot_ms(w) if w.units else 0)) * rng.normal(1, 0.01), w)
    policy = make_policy(HarliConfig(mode="harli-serial", tpot_slo_ms=SLO), p)
    for _ in range(20):
        policy.observe_corun(50.0, 50.5)  # small observed error -> margin at its floor
    return policy


def ctx(bs, waiting=0, slack=None, pieces=PIECES):
    return SlotContext(IterationFeatures(bs, bs * 300), bs, waiting, pieces[0][1] if pieces else 0,
                       pieces, slack)


def test_largest_slot_that_keeps_the_predicted_iteration_within_slo(trained):
    for bs in (1, 4, 8, 12):
        g = trained.grant(ctx(bs))
        assert g is not None and g.planned.pieces >= 1
        f = IterationFeatures(bs, bs * 300)
        target = SLO - trained.margin_ms()
        assert decode_ms(f) + slot_ms(g.planned) <= target * 1.05
        # One more piece would not have fit.
        more = PIECES[g.planned.pieces] if g.planned.pieces < len(PIECES) else None
        if more is not None:
            assert decode_ms(f) + slot_ms(g.planned.plus(*more)) > target * 0.95
    # Less slack at bigger batches: smaller slots.
    assert trained.grant(ctx(1)).budget_units > trained.grant(ctx(12)).budget_units


def test_no_slack_no_slot_and_prefill_pending_no_slot(trained):
    assert trained.predictor.confident(IterationFeatures(30, 9000))
    assert trained.grant(ctx(30)) is None            # decode alone ~108 ms: no slack
    assert trained.grant(ctx(2, waiting=1)) is None  # prefill next: explicit no
    assert trained.grant(ctx(2, slack=5.0)) is None  # a request is owed time


def test_idle_gets_full_size_slots(trained):
    g = trained.grant(SlotContext(IterationFeatures(0, 0), 0, 0, 256, PIECES, None))
    assert g.budget_ms == HarliConfig().idle_slot_ms and g.budget_units >= 1 << 30


def test_margin_adapts_to_observed_error(trained):
    floor = trained.margin_ms()
    assert floor == pytest.approx(0.03 * SLO)
    at_floor = trained.grant(ctx(4))
    for _ in range(200):
        trained.observe_corun(50.0, 62.0)  # the model under-predicts by 12 ms
    assert trained.margin_ms() == pytest.approx(12.0)
    for i in range(200):  # unbiased but noisy: +-8 ms
        trained.observe_corun(50.0, 50.0 + (8.0 if i % 2 else -8.0))
    assert trained.margin_ms() == pytest.approx(2 * 8.0 / 4)  # two standard errors of a 16-token mean
    # A wider margin, a shorter slot: its budget by the margin's 1 ms, its whole pieces
    # never more (whether one piece fewer fits depends on where the pieces' edges fall).
    wider = trained.grant(ctx(4))
    assert wider.budget_ms == pytest.approx(at_floor.budget_ms - (4.0 - 3.0))
    assert wider.budget_units <= at_floor.budget_units


def test_feedback_backs_off_before_violation_and_recovers(trained):
    units_before = trained.grant(ctx(4)).budget_units
    much = 0.2 * SLO  # work added a fifth of the SLO to each token
    trained.observe_request(0.97 * SLO, much)   # where the deadlines aim: no reaction
    assert trained.beta == 1.0
    trained.observe_request(0.995 * SLO, much)  # a near miss: back off now, before a violation
    assert trained.beta < 1.0
    assert trained.grant(ctx(4)).budget_units < units_before
    for _ in range(200):
        trained.observe_request(0.5 * SLO, 0.0)
    assert trained.beta == 1.0


def test_only_a_near_miss_that_work_made_materially_slower_backs_off(trained):
    # Decode alone came near the SLO (a slower host, a prefill burst), or work ran beside
    # only a few of its iterations: the slots did not cause it, so shrinking them would
    # only give up training.
    for work_ms_per_token in (0.0, 0.01 * SLO, 0.029 * SLO):
        trained.observe_request(1.2 * SLO, work_ms_per_token)
    assert trained.beta == 1.0
    trained.observe_request(1.2 * SLO, 0.03 * SLO)  # the margin floor: the policy's noise level
    assert trained.beta == pytest.approx(0.9)


def test_cold_predictor_explores_with_one_piece_only():
    policy = make_policy(HarliConfig(mode="harli-serial", tpot_slo_ms=SLO), TwoStagePredictor())
    assert policy.grant(ctx(2)) is None  # stage 1 knows nothing yet
    p = policy.predictor
    for bs in range(1, 40):
        p.observe(IterationFeatures(bs % 8 + 1, 300 * (bs % 8 + 1)), decode_ms(
            IterationFeatures(bs % 8 + 1, 300 * (bs % 8 + 1))), SlotWork())
    g = policy.grant(ctx(2))
    assert g is not None and g.planned.pieces == 1


def test_unseen_batch_size_runs_alone_until_learned():
    p = TwoStagePredictor()
    for i in range(160):
        bs = 1 + i % 4  # only batch sizes 1..4 seen
        f = IterationFeatures(bs, 300 * bs)
        w = SlotWork(256, 0, 0, 1) if i % 3 == 0 else SlotWork()
        p.observe(f, decode_ms(f) + (slot_ms(w) if w.units else 0), w)
    policy = make_policy(HarliConfig(mode="harli-serial", tpot_slo_ms=SLO), p)
    assert policy.grant(ctx(2)) is not None
    assert policy.grant(ctx(9)) is None
    for _ in range(5):
        p.observe(IterationFeatures(9, 2700), decode_ms(IterationFeatures(9, 2700)), SlotWork())
    assert policy.grant(ctx(9)) is not None


def test_a_plan_names_its_decision_and_what_it_weighed(trained):
    # A slot: its plan says "granted", the target it had and the slot's predicted iteration.
    plan = trained.plan(ctx(4))
    assert plan.reason == "granted" and plan.serial is not None
    f = IterationFeatures(4, 1200)
    assert plan.target_ms == pytest.approx(SLO - trained.margin_ms(), abs=0.5)
    assert plan.expected_ms == pytest.approx(decode_ms(f) + slot_ms(plan.serial.planned), rel=0.05)
    # A request owed time leaves no slack: nothing runs, and the plan says why and how far.
    late = trained.plan(ctx(4, slack=-50.0))
    assert late.serial is None and late.reason == "no_slack"
    assert late.target_ms == pytest.approx(-50.0 - 0.03 * SLO, abs=0.5)
    assert late.expected_ms == pytest.approx(decode_ms(f), rel=0.05)
