import time

from device_util import QueueDevice
from harli_sgl.core.gpu.fence import CudaDevice, DeviceDeadline, HostDevice, PendingGrants, device_for


def test_device_for():
    assert isinstance(device_for("cpu"), HostDevice)
    assert isinstance(device_for("cuda"), CudaDevice)


def test_on_the_cpu_the_deadline_is_the_host_clock_and_nothing_waits():
    far = time.perf_counter() + 3600
    d = DeviceDeadline(HostDevice(), far, ms_per_unit=1.0)
    d.launched(10**9)
    assert not d.passed() and d.fences_waited == 0
    assert DeviceDeadline(HostDevice(), time.perf_counter() - 1).passed()


def test_queued_work_far_from_the_deadline_needs_no_host_wait():
    device = QueueDevice()
    d = DeviceDeadline(device, time.perf_counter() + 3600, ms_per_unit=0.001)
    for _ in range(5):
        assert not d.passed()
        d.launched(100)
    assert device.waits == 0 and d.queued_ms > 0


def test_queued_work_that_may_reach_the_deadline_is_fenced_before_judging():
    device = QueueDevice()
    d = DeviceDeadline(device, time.perf_counter() + 3600, ms_per_unit=1.0)
    d.launched(4_000_000)  # predicted 4000 s of queued work: past the deadline if real
    assert not d.passed()  # the fence showed the device is not there yet
    assert device.waits == 1 and d.queued_ms == 0.0 and device.finished == device.queued
    assert d.observed_ms_per_unit > 0  # measured at the fence: the next slot's prediction


def test_without_a_prediction_every_boundary_with_queued_work_fences():
    device = QueueDevice()
    d = DeviceDeadline(device, time.perf_counter() + 3600)
    assert not d.passed() and device.waits == 0  # nothing queued yet
    d.launched(1)
    d.passed()
    d.launched(1)
    d.passed()
    assert device.waits == 2


def test_lent_pages_are_handed_over_only_after_the_engines_fence_in_order():
    device = QueueDevice()
    grants = PendingGrants(device)
    grants.lend(1, "g1")
    grants.lend(2, "g2")
    assert grants.ready() == [] and len(grants) == 2
    device.finished = 1  # the engine's work before lease 1 is done, not before lease 2
    assert grants.ready() == ["g1"]
    assert grants.ready() == []
    device.finished = 2
    assert grants.ready() == ["g2"] and len(grants) == 0


def test_a_reclaim_of_pages_never_handed_over_cancels_the_hand_over():
    device = QueueDevice()
    grants = PendingGrants(device)
    grants.lend(7, "g7")
    assert grants.cancel(7)
    device.finished = 1
    assert grants.ready() == []
    assert not grants.cancel(7)  # handed over (or unknown): the worker acknowledges it


def test_on_the_cpu_lent_pages_are_ready_at_once():
    grants = PendingGrants(HostDevice())
    grants.lend(1, "g1")
    assert grants.ready() == ["g1"]
