"""The fleet tool's instance flags (tools/fleet.py): crossed CPU splits never widen decode."""

from __future__ import annotations

import os

from harli_sgl.tools.fleet import Fleet


def test_crossed_splits_keep_each_decode_off_the_other_instances_core(tmp_path):
    fleet = Fleet(str(tmp_path), instances=2)
    first, second = fleet._cpu_split(0), fleet._cpu_split(1)
    # Every project host has 2 cores or more: a missing split is a failure to see, not a skip.
    assert len(os.sched_getaffinity(0)) >= 2
    d0, w0 = first[1].split("/")
    d1, w1 = second[1].split("/")
    assert (w0, w1) == (d1, d0)  # each worker share is the other's decode core ...
    assert first[2:] == second[2:] == ["--harli-widen-decode", "never"]  # ... so never widen
    # An operator's own split is left alone (and so is widening).
    assert Fleet(str(tmp_path), extra_flags=("--harli-cpu-split", "0/1"))._cpu_split(0) == []
