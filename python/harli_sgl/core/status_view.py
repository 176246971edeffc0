"""``/harli/status`` as an operator reads it: what trains now, and why not when it does not.

The scheduler's report (:meth:`SlotCoordinator.report`) is complete and flat: every
number the policy, predictor and pool keep. An operator asking "why is my job
not training?" should not have to decode it. :func:`operator_view` shapes it:

* ``training``: ``{"now": <arrangement>, "why": <one sentence>}``, from the
  first condition that holds: no live worker, no job, the start-up profile, a
  mode that never trains under load, then the policy's last decision (harli
  and harli-serial name every decision, e.g. ``no_slack``) with the numbers
  behind it (SLO, beta, margin). A margin near the SLO, for example, reads
  "no serial slot while decoding: ... margin 176 ms against a 100 ms SLO".
* The predictor's regression weights (38 numbers for stage 1) move to the
  debug view (``?debug=1``); MAPE and sample counts stay.
* ``pool.note`` explains leases held while no job runs: the worker keeps its
  lent pages between jobs, and serving takes them back whenever its free pages
  fall below the watermark.

The sentences are the policy's own (:class:`~harli_sgl.core.policy.decision.Decision`).
Pure dict-to-dict, engine-agnostic, so it is unit-tested on real reports.
"""

from __future__ import annotations

import copy

from harli_sgl.core.policy.decision import CORUN_INTERFERENCE_PREFIX, CORUN_INTERFERENCE_TEXT, Decision

# Modes whose policy never trains while requests are decoding.
QUIET_UNDER_LOAD = {"off": "mode off: the worker is never given work",
                    "idle": "mode idle: the worker trains only while no request is running"}


def _target(status: dict) -> str:
    pol, slo = status.get("policy") or {}, status.get("tpot_slo_ms")
    if slo is None or "margin_ms" not in pol:
        return "target unknown"
    beta, margin = pol.get("beta", 1.0), pol["margin_ms"]
    return (f"target = beta {beta:g} x SLO {slo:g} ms - margin {margin:.0f} ms = "
            f"{beta * slo - margin:.0f} ms")


def explain(status: dict) -> dict:
    """``{"now": arrangement, "why": sentence}`` for a scheduler report."""
    worker = status.get("worker") or {}
    arrangement = status.get("arrangement") or {}
    now = "concurrent" if arrangement.get("active") else \
        max((arrangement.get("time_fraction") or {"none": 1.0}).items(), key=lambda kv: kv[1])[0]
    mode = status.get("mode")
    if not worker.get("alive"):
        return {"now": "none", "why": "the finetune worker is not running (starting or restarting; "
                                      f"restarts so far: {worker.get('restarts', 0)})"}
    if not worker.get("has_work"):
        return {"now": "none", "why": "no fine-tuning job is running on this instance"}
    if status.get("profiling"):
        return {"now": now, "why": "the start-up latency profile is running; jobs train once it "
                                   "is done"}
    if mode in QUIET_UNDER_LOAD:
        return {"now": now, "why": QUIET_UNDER_LOAD[mode]}
    decision = (status.get("policy") or {}).get("last_decision")
    if decision is None:
        return {"now": now, "why": f"mode {mode}: the policy decides per iteration"}
    serial_reason = decision.removeprefix(CORUN_INTERFERENCE_PREFIX)
    known = serial_reason in Decision._value2member_map_
    text = (Decision(serial_reason).text if known else serial_reason).format(target=_target(status))
    if decision != serial_reason:
        text = CORUN_INTERFERENCE_TEXT + text
    return {"now": now, "why": text, "decision": decision}


def _strip_weights(node):
    if isinstance(node, dict):
        return {k: _strip_weights(v) for k, v in node.items() if k != "weights"}
    if isinstance(node, list):
        return [_strip_weights(v) for v in node]
    return node


def operator_view(status: dict, debug: bool = False) -> dict:
    out = copy.deepcopy(status)
    out["training"] = explain(status)
    if not debug and out.get("predictor") is not None:
        out["predictor"] = _strip_weights(out["predictor"])
    pool = out.get("pool")
    worker = out.get("worker") or {}
    if pool and pool.get("leases") and not worker.get("has_work"):
        pool["note"] = ("the worker keeps its leased pages between jobs; serving takes them back "
                        "whenever its free pages fall below the watermark (reclaim p99 "
                        f"{pool.get('reclaim_latency_ms_p99') or 0:.1f} ms)")
    return out
