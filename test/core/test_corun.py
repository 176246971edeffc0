"""CoRunTracker: overlap of worker pieces with an iteration, from timestamps alone."""

from __future__ import annotations

import pytest

from harli_sgl.core.corun import CoRunTracker
from harli_sgl.core.iteration import SlotWork


def tracker(*pieces, active=False):
    t = CoRunTracker()
    t.started(0.5, (1,), now=0.0)
    for start, end, fwd, bwd, head in pieces:
        t.on_piece(start, end, SlotWork(fwd, bwd, head, 1), trained_tokens=0)
    if not active:
        t.stop_requested(now=10.0)
    return t


def test_pieces_inside_the_iteration_count_by_kind():
    t = tracker((1.0, 1.4, 100, 0, 0), (1.4, 1.8, 0, 200, 0))
    o = t.overlap(1.0, 2.0, serial=[], running_now=False)
    assert o.fwd == pytest.approx(0.4) and o.bwd == pytest.approx(0.4) and o.head == 0.0
    assert o.total == pytest.approx(0.8) and o.share == 0.5


def test_serial_top_up_is_not_decode_time():
    # Iteration [0, 1): decode [0, 0.5), top-up [0.5, 1.0). A piece ran beside the decode.
    t = tracker((0.0, 0.5, 0, 0, 50), (0.5, 1.0, 100, 0, 0))
    o = t.overlap(0.0, 1.0, serial=[(0.5, 1.0)], running_now=False)
    assert o.head == pytest.approx(1.0) and o.fwd == pytest.approx(0.0)


def test_a_piece_still_running_counts_while_co_running():
    t = tracker((0.0, 1.2, 100, 0, 0), active=True)
    o = t.overlap(1.0, 2.0, serial=[], running_now=True)
    assert o.fwd == pytest.approx(1.0)
    assert t.overlap(1.0, 2.0, serial=[], running_now=False).fwd == pytest.approx(0.2)


def test_no_pieces_no_overlap_and_stop_latency():
    t = tracker()
    assert t.overlap(0.0, 1.0, serial=[], running_now=False).total == 0.0
    t.started(0.5, (1,), now=20.0)
    seq = t.stop_requested(now=21.0)
    t.stopped(seq + 1, 21.5)  # an old answer: ignored
    assert t.stopping is not None
    t.stopped(seq, 21.03)
    assert t.stopping is None and list(t.stop_latency_ms) == [pytest.approx(30.0)]


def test_a_co_run_started_after_the_forward_did_not_overlap_it():
    # Iteration [1, 2): alone (a calibration); its results were processed and the next plan
    # restarted the worker at 1.97, before the next launch at 2.0. The last piece ended at 0.9.
    t = tracker((0.5, 0.9, 100, 0, 0))
    t.started(0.5, (1,), now=1.97)
    assert t.overlap(1.0, 2.0, serial=[], running_now=True).total == 0.0
    # The next iteration, [2, 3), runs beside it: the gap since the start counts.
    assert t.overlap(2.0, 3.0, serial=[], running_now=True).fwd == pytest.approx(1.0)


def test_new_cores_for_a_running_worker_are_no_new_start():
    t = tracker((0.0, 1.2, 100, 0, 0), active=True)
    t.started(1.0, (0, 1), now=1.9)  # the worker moves to every core mid-iteration
    assert t.started_at == 0.0
    assert t.overlap(1.0, 2.0, serial=[], running_now=True).fwd == pytest.approx(1.0)
