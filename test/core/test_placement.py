"""CPU placement: core lists, the default split, and per-thread affinity and class from /proc."""

from __future__ import annotations

import os
import threading

import pytest

from harli_sgl.core import placement


def test_parse_and_format():
    assert placement.parse_cpus("0,2-3, 5") == (0, 2, 3, 5)
    assert placement.format_cpus((0, 1)) == "0,1"
    with pytest.raises(ValueError):
        placement.parse_cpus(" , ")


def test_default_split_keeps_half_for_decode():
    assert placement.default_split((0,)) is None
    assert placement.default_split((0, 1)) == ((0,), (1,))
    split = placement.default_split((0, 1, 2, 3, 4))
    assert split.decode == (0, 1, 2) and split.worker == (3, 4)
    assert split.worker_share == pytest.approx(0.4)


def test_pin_and_idle_class_reach_every_thread_of_a_process():
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        target = cpus[-1:]
        assert placement.pin_threads(target) >= 2
        seen = placement.thread_affinity(os.getpid())
        assert helper.native_id in seen
        assert all(c == target for c in seen.values())
        keep = threading.get_native_id()
        placement.set_idle_class(True, skip=(keep,))
        assert os.sched_getscheduler(helper.native_id) == os.SCHED_IDLE
        assert os.sched_getscheduler(keep) == os.SCHED_OTHER
        placement.set_idle_class(False)
        assert os.sched_getscheduler(helper.native_id) == os.SCHED_OTHER
    finally:
        placement.pin_threads(cpus)
        placement.set_idle_class(False)
        stop.set()
        helper.join()
