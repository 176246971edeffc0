"""estimated_finish from the job's own recent rate; None until there is one."""

from __future__ import annotations

import pytest

from harli_sgl.worker.finish_estimate import FinishEstimate


def test_none_until_a_step_is_measured():
    e = FinishEstimate()
    assert e.finish_at(10) is None
    e.start(0, 1000.0)
    assert e.finish_at(10) is None  # a start alone is no rate
    e.step_done(1, 1002.0)
    assert e.finish_at(10) == 1002 + 9 * 2


def test_the_rate_follows_the_recent_window_not_the_whole_job():
    e = FinishEstimate(window_steps=4)
    e.start(0, 0.0)
    for step in range(1, 11):  # 1 s a step
        e.step_done(step, float(step))
    assert e.finish_at(100) == 10 + 90
    for step in range(11, 15):  # the load grew: 5 s a step
        e.step_done(step, 10.0 + 5 * (step - 10))
    assert e.finish_at(100) == 30 + 86 * 5  # only the last 4 steps count


def test_a_resumed_job_measures_afresh_and_a_finished_one_is_now():
    e = FinishEstimate()
    e.start(0, 0.0)
    e.step_done(5, 500.0)
    e.start(3, 1000.0)  # resumed from the checkpoint at step 3
    assert e.finish_at(10) is None
    e.step_done(4, 1010.0)
    assert e.finish_at(10) == 1010 + 6 * 10
    e.step_done(10, 1070.0)
    assert e.finish_at(10) == 1070


def test_window_must_hold_a_step():
    with pytest.raises(ValueError):
        FinishEstimate(window_steps=0)
