"""The measured finetune speeds behind the harli policy's top-up gate (issue 18, item 6)."""

from __future__ import annotations

import time

import pytest

from harli_sgl.config import HarliConfig
from harli_sgl.core.coordinator.speeds import FinetuneSpeeds
from harli_sgl.core.iteration import CoRunOverlap, IterationFeatures, SlotWork
from harli_sgl.core.message.from_worker import CORUN_SLOT, SlotReport
from harli_sgl.core.policy.base import Arrangement, SlotContext
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor


def piece(units: int, ms: float, ended_at: float) -> SlotReport:
    return SlotReport(CORUN_SLOT, SlotWork(units_bwd=units, pieces=1), 0, ms, job_id="j",
                      started_at=ended_at - ms / 1000.0, ended_at=ended_at)


def test_top_up_and_co_run_speeds_are_one_estimator_over_one_window():
    """Both are total units over total ms: short pieces do not inflate the co-run speed."""
    from harli_sgl.core.coordinator.speeds import SPEED_WINDOW_S

    speeds, t = FinetuneSpeeds(), 1000.0
    # One long backward piece at 10.24 units/ms, then nine short pieces at 40 units/ms.
    speeds.corun_pieces.add(t, 8192, 800.0)
    for i in range(9):
        speeds.piece_ran(piece(256, 6.4, t + 0.01 * (i + 1)), 0.5, False)
    rate = speeds.corun_pieces.rate(t + 1.0)
    assert rate == pytest.approx((8192 + 9 * 256) / (800.0 + 9 * 6.4))  # 12.24, not ~37
    # Top-ups: units per ms the scheduler was blocked, the same way.
    speeds.topup_ran(2000, 100.0, ended_at=t)
    speeds.topup_ran(100, 100.0, ended_at=t + 0.5)
    assert speeds.topups.rate(t + 1.0) == pytest.approx(2100 / 200.0)
    # The same window for both: what ran before it no longer counts, on either side.
    later = t + SPEED_WINDOW_S + 0.005
    assert speeds.corun_pieces.rate(later) == pytest.approx(40.0)
    assert speeds.topups.rate(later) == pytest.approx(1.0)
    assert speeds.corun_pieces.rate(later + SPEED_WINDOW_S) is None


def test_the_gate_tops_up_where_the_whole_device_beats_the_share_by_total_units():
    p = TwoStagePredictor()
    for rep in range(12):
        for bs in range(1, 5):
            f = IterationFeatures(bs, 100 * bs)
            p.observe(f, 20.0 + 4.0 * bs, SlotWork())
            w = SlotWork(units_fwd=256 * (1 + (rep + bs) % 4), pieces=1)
            p.observe(f, 20.0 + 4.0 * bs + 0.01 * w.units, w)
            p.observe_concurrent(f, 20.0 + 5.0 * bs, CoRunOverlap(bwd=1.0, share=0.5))
    pol = make_policy(HarliConfig(mode="harli", tpot_slo_ms=100.0), p)
    speeds = FinetuneSpeeds()
    now = time.monotonic()
    speeds.piece_ran(piece(8192, 800.0, now), 0.5, False)
    for i in range(9):
        speeds.piece_ran(piece(256, 6.4, now), 0.5, False)
    speeds.topup_ran(2000, 100.0, ended_at=now)  # 20 units/ms: 1.6x the co-run's 12.24
    pieces = tuple((0, 256) for _ in range(24))
    plan = pol.plan(SlotContext(IterationFeatures(1, 100), 1, 0, 256, pieces, corun_share=0.5,
                                topup_units_per_ms=speeds.topup_units_per_ms,
                                corun_units_per_ms=speeds.corun_units_per_ms))
    assert plan.arrangement is Arrangement.HYBRID, plan.reason


def test_pieces_on_the_idle_server_are_the_idle_speeds_not_the_co_run_speed():
    """Idle pieces feed one window per placement, trusted after IDLE_SPEED_MIN_MS of pieces;
    only pieces on every core move harvest's denominator."""
    from harli_sgl.core.coordinator.speeds import IDLE_SPEED_MIN_MS

    speeds, now = FinetuneSpeeds(), time.monotonic()
    n = int(IDLE_SPEED_MIN_MS // 30.0)
    for i in range(n - 1):
        speeds.piece_ran(piece(240, 30.0, now), 1.0, True)      # every core: 8 units/ms
        speeds.piece_ran(piece(270, 30.0, now), 0.5, True)      # the share, idle: 9
    assert speeds.idle_every_core_units_per_ms is None           # not enough piece time yet
    assert speeds.idle_share_units_per_ms is None
    speeds.piece_ran(piece(240, 30.0, now), 1.0, True)
    speeds.piece_ran(piece(270, 30.0, now), 0.5, True)
    assert speeds.idle_every_core_units_per_ms == pytest.approx(8.0)
    assert speeds.idle_share_units_per_ms == pytest.approx(9.0)
    assert speeds.corun_units_per_ms is None                     # nothing ran beside decode
    assert speeds.idle_units_per_ms == pytest.approx(8.0)        # every core only
    speeds.piece_ran(piece(150, 30.0, now), 0.5, False)          # beside decode: 5
    assert speeds.corun_units_per_ms == pytest.approx(5.0)
    assert speeds.idle_share_units_per_ms == pytest.approx(9.0)
