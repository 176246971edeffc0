"""The coordinator's status: the raw tree, and the scheduler's part of ``/harli/status``.

Read-only views over the coordinator's parts, built on demand (a status
request, a Prometheus scrape); nothing here is on the decode hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harli_sgl.core.coordinator.speeds import FinetuneSpeeds
from harli_sgl.core.gpu.corun_means import Means
from harli_sgl.core.metrics import ColocationMetrics
from harli_sgl.core.predictor import slo_reach

if TYPE_CHECKING:
    from harli_sgl.core.coordinator.coordinator import SlotCoordinator


def free_units_per_s(speeds: FinetuneSpeeds, metrics: ColocationMetrics) -> float | None:
    """The compute a new job could get here: the idle speed times the share of time
    decode leaves free over the last minute (None until a speed is known).

    A ranking signal for placing jobs across a fleet, not a promise: co-running also
    harvests compute while decode runs, which this leaves out on every instance alike.
    """
    idle_rate = speeds.idle_rate
    if not idle_rate:
        return None
    return idle_rate * 1000.0 * (1.0 - metrics.decode_busy_fraction())


def status(c: SlotCoordinator) -> dict:
    worker = c.supervisor.status() if c.supervisor is not None else \
        {"alive": False, "pid": None, "restarts": 0}
    ws, speeds, metrics = c.worker_state, c.speeds, c.metrics
    work = {"has_work": ws.has_work, "job_id": ws.job_id,
            "max_piece_units": max((u for _, u in ws.next_pieces), default=0)}
    idle_rate = speeds.idle_rate
    units_per_s = metrics.units_per_s()
    harvest = units_per_s / (idle_rate * 1000.0) if idle_rate else None
    cfg = c.config
    return {"worker": worker, "worker_work": work, "policy": c.policy.status(),
            "predictor": c.predictor.status(), "profiling": c.profiling,
            "pool": c.pool.status() if c.pool is not None else None,
            "slots_overrun": c.channel.slots_overrun,
            "requests_in_flight": len(c.tracker),
            "arrangement": {**c.corun.status(), "available_share": c.corun_share,
                            # How the worker co-runs, or why it cannot (then: serial slots).
                            **c.corun_control.means.status(),
                            "share_fixed": c.corun_control.means.means is Means.MPS_FIXED,
                            "decode_cpus": list(cfg.decode_cpus),
                            "worker_cpus": list(cfg.worker_cpus),
                            # Units per ms: a hybrid top-up per ms decode waited for it,
                            # and co-run pieces on the worker's share (harli tops up
                            # only where the first beats the second).
                            "topup_units_per_ms": speeds.topup_units_per_ms,
                            "corun_units_per_ms": speeds.corun_units_per_ms,
                            # The idle worker on every core and on its share (harli
                            # spreads it only where the first beats the second).
                            "idle_every_core_units_per_ms": speeds.idle_every_core_units_per_ms,
                            "idle_share_units_per_ms": speeds.idle_share_units_per_ms},
            "harvest": {"value": harvest, "units_per_s": units_per_s,
                        "free_units_per_s": free_units_per_s(speeds, metrics),
                        "decode_busy_fraction": metrics.decode_busy_fraction(),
                        "idle_units_per_s": idle_rate * 1000.0 if idle_rate else None,
                        "idle_source": "measured_idle" if speeds.idle_units_per_ms else
                        "startup_profile" if speeds.profile_units_per_ms else None},
            **metrics.status()}


def report(c: SlotCoordinator) -> dict:
    """The scheduler's part of ``/harli/status`` (the main process adds ``jobs``)."""
    cfg, core = c.config, status(c)
    return {
        "mode": cfg.mode,
        "tpot_slo_ms": cfg.tpot_slo_ms,
        # The smallest measured batch whose decode alone is predicted above the SLO.
        "slo_unreachable_from": _slo_unreachable(c),
        "static_slot_units": cfg.static_slot_units,
        "prefill_cpus": cfg.prefill_cpus,
        "worker": {**core["worker"], **core["worker_work"]},
        "jobs": None,
        "finetune_tokens_per_s": core["finetune_tokens_per_s"],
        "slo_attainment": core["slo_attainment"],
        "tpot_ms": core["tpot_ms"],
        "slots": {**core["slots"], "overrun": core["slots_overrun"]},
        "arrangement": core["arrangement"],
        "requests_in_flight": core["requests_in_flight"],
        "harvest": core["harvest"],
        "totals": core["totals"],
        "window_s": core["window_s"],
        "policy": core["policy"],
        "predictor": core["predictor"],
        "profiling": core["profiling"],
        "pool": None if core["pool"] is None else {**core["pool"], "integrity": c.pool.integrity},
    }


def _slo_unreachable(c: SlotCoordinator) -> dict | None:
    over = slo_reach.first_batch_over(c.predictor, c.config.tpot_slo_ms)
    return None if over is None else {"batch_size": over[0], "decode_alone_ms": round(over[1], 1)}
