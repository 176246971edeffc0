"""CPU affinity: per-thread affinity and scheduling class, set and read through /proc."""

from __future__ import annotations

import os
import threading

from harli_sgl.core import cpu_affinity


def test_pin_and_idle_class_reach_every_thread_of_a_process():
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        target = cpus[-1:]
        assert cpu_affinity.pin_threads(target) >= 2
        seen = cpu_affinity.thread_affinity(os.getpid())
        assert helper.native_id in seen
        assert all(c == target for c in seen.values())
        keep = threading.get_native_id()
        cpu_affinity.set_idle_class(True, skip=(keep,))
        assert os.sched_getscheduler(helper.native_id) == os.SCHED_IDLE
        assert os.sched_getscheduler(keep) == os.SCHED_OTHER
        cpu_affinity.set_idle_class(False)
        assert os.sched_getscheduler(helper.native_id) == os.SCHED_OTHER
    finally:
        cpu_affinity.pin_threads(cpus)
        cpu_affinity.set_idle_class(False)
        stop.set()
        helper.join()
