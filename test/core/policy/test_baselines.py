from __future__ import annotations

import pytest

from harli_sgl.config import MODES, HarliConfig
from harli_sgl.core.policy.base import IterationFeatures, SlotContext
from harli_sgl.core.policy.registry import POLICIES, make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


def ctx(running=0, waiting=0):
    return SlotContext(IterationFeatures(running, 100 * running), running, waiting,
                       worker_min_units=64)


def test_every_mode_has_a_policy():
    assert set(POLICIES) == set(MODES)
    for mode in POLICIES:
        assert make_policy(HarliConfig(mode=mode), TwoStagePredictor()).name == mode


def test_off_never_grants_and_greedy_free_runs():
    assert make_policy(HarliConfig(mode="off")).grant(ctx()) is None
    greedy = make_policy(HarliConfig(mode="greedy"))
    assert greedy.free_run and greedy.grant(ctx(4)) is None


def test_idle_only_grants_when_nothing_runs_or_waits():
    idle = make_policy(HarliConfig(mode="idle", idle_slot_ms=30.0))
    g = idle.grant(ctx())
    assert g is not None and g.budget_ms == 30.0
    assert idle.grant(ctx(running=1)) is None
    assert idle.grant(ctx(waiting=1)) is None


def test_static_grants_its_fixed_size_always():
    static = make_policy(HarliConfig(mode="static", static_slot_units=512))
    assert static.grant(ctx()).budget_units == 512
    assert static.grant(ctx(running=8)).budget_units == 512
    assert make_policy(HarliConfig(mode="static", static_slot_units=0)).grant(ctx(1)) is None


def test_unknown_policy_name():
    with pytest.raises(ValueError):
        HarliConfig(mode="nope")
