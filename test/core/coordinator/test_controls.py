"""Operator controls and the status report, validated and shaped by the coordinator itself."""

from __future__ import annotations

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


def coordinator(mode="off") -> SlotCoordinator:
    cfg = HarliConfig(mode=mode).resolved("cpu")
    predictor = TwoStagePredictor()
    return SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, supervisor=None)


def test_mode_changes_by_name_and_the_report_follows():
    c = coordinator("harli")
    assert c.report()["mode"] == "harli"
    assert c.control({"mode": "off"})
    assert c.policy.name == "off" and c.report()["mode"] == "off"


def test_bad_controls_change_nothing():
    c = coordinator("off")
    for knobs in ({"mode": "turbo"}, {"static_slot_units": -1}, {"bogus": 1}, {},
                  {"mode": "off", "bogus": 1}):
        assert not c.control(knobs), knobs
        assert c.config.mode == "off" and c.policy.name == "off"


def test_finetuning_modes_need_a_worker():
    c = coordinator("off")
    assert not c.control({"mode": "harli"})  # started without a worker
    assert c.policy.name == "off"
    assert c.control({"static_slot_units": 512})
    assert c.report()["static_slot_units"] == 512


def test_profile_control_toggles_profiling():
    c = coordinator("off")
    assert c.control({"profile": True}) and c.profiling
    assert c.control({"profile": False}) and not c.profiling


def test_prefill_cpus_is_a_run_time_control():
    c = coordinator("off")
    assert c.control({"prefill_cpus": "all"}) and c.config.prefill_cpus == "all"
    assert not c.control({"prefill_cpus": "some"}) and c.config.prefill_cpus == "all"
