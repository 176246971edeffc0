"""The operator's /harli/status view, on a report a real server returned.

``test/data/harli_status_2026-12-01.json`` is ``GET /harli/status`` from the
co-location benchmark's server (mode off for a run, a job running, no lease).
"""

import copy
import json
import os

from harli_sgl.core.status_view import explain, operator_view

REPORT = os.path.join(os.path.dirname(__file__), "..", "data", "harli_status_2026-12-01.json")


def report() -> dict:
    with open(REPORT) as f:
        r = json.load(f)
    r.pop("training", None)
    return r


def harli(decision: str, margin_ms: float = 25.0) -> dict:
    r = report()
    r["mode"] = "harli"
    r["policy"] = {"policy": "harli", "beta": 1.0, "margin_ms": margin_ms,
                   "decisions": {decision: 3}, "last_decision": decision}
    return r


def test_weights_move_to_the_debug_view_and_nothing_else_changes():
    r = report()
    assert r["predictor"]["stage1"]["weights"], "the fixture has weights"
    plain, debug = operator_view(r), operator_view(r, debug=True)
    assert "weights" not in json.dumps(plain["predictor"])
    assert plain["predictor"]["stage1"]["mape"] == r["predictor"]["stage1"]["mape"]
    assert debug["predictor"] == r["predictor"]
    assert {k: v for k, v in plain.items() if k not in ("predictor", "training")} == \
        {k: v for k, v in r.items() if k != "predictor"}


def test_a_margin_that_eats_the_slo_is_named_with_its_numbers():
    why = explain(harli("no_slack", margin_ms=176.0))["why"]
    assert "no serial slot while decoding" in why
    assert "margin 176 ms" in why and "SLO 100 ms" in why and "= -76 ms" in why


def test_each_condition_before_the_policy_is_said_first():
    r = harli("granted")
    assert "slack" in explain(r)["why"]
    no_job = copy.deepcopy(r)
    no_job["worker"]["has_work"] = False
    assert explain(no_job) == {"now": "none", "why": "no fine-tuning job is running on this instance"}
    dead = copy.deepcopy(r)
    dead["worker"]["alive"] = False
    assert "not running" in explain(dead)["why"]
    profiling = copy.deepcopy(r)
    profiling["profiling"] = True
    assert "profile" in explain(profiling)["why"]
    off = copy.deepcopy(r)
    off["mode"] = "off"
    assert explain(off)["why"].startswith("mode off")


def test_co_running_stopped_for_interference_says_so():
    e = explain(harli("corun_interference_no_slack"))
    assert e["why"].startswith("co-running beside this batch would break the SLO")
    assert "no serial slot" in e["why"] and e["decision"] == "corun_interference_no_slack"
    assert "no faster than the share" in explain(harli("concurrent_topup_no_gain"))["why"]


def test_leases_held_without_a_job_are_explained():
    r = report()
    r["pool"].update(leases=1, leased_tokens=4096)  # as the same server showed a minute before
    assert "note" not in operator_view(r)["pool"]  # a job runs: the leases are in use
    r["worker"]["has_work"] = False
    assert "keeps its leased pages between jobs" in operator_view(r)["pool"]["note"]


def test_every_decision_the_policies_make_has_a_sentence():
    import inspect
    import re

    from harli_sgl.core.policy import harli as H
    from harli_sgl.core.policy import harli_serial as S
    from harli_sgl.core.policy.decision import Decision

    said = set(re.findall(r"Decision\.([A-Z_]+)", inspect.getsource(S.HarliSerialPolicy._decide)))
    said |= set(re.findall(r"Decision\.([A-Z_]+)", inspect.getsource(H.HarliPolicy)))
    assert said and all(Decision[name].text for name in said), said - set(Decision.__members__)
