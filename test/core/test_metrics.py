"""Lifetime totals of the co-location metrics: what a benchmark reads a short window's rate from."""

from __future__ import annotations

from harli_sgl.core.metrics import ColocationMetrics


def test_units_count_every_job_piece_and_no_synthetic_slot():
    m = ColocationMetrics(slo_ms=310.0)
    m.slot_ran(900, 40.0, trained_tokens=0, for_job=False)  # the start-up profile's work
    m.slot_ran(600, 30.0, trained_tokens=0)  # a job's forward pieces: no micro-batch ended
    m.corun_ran(300, trained_tokens=0)
    m.corun_ran(500, trained_tokens=225)  # this piece ended a micro-batch's backward
    totals = m.status()["totals"]
    # Trained tokens move only at a micro-batch's end; units move with every job piece.
    assert totals["trained_tokens"] == 225
    assert totals["units"] == 1400
    assert totals["slots"] == 2
    m.reset()  # windows are forgotten after the profile; lifetime totals are not
    assert m.status()["totals"]["units"] == 1400
