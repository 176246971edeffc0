"""An asynchronous device for the fence tests: work finishes when the test says so.

It implements :class:`harli_sgl.core.gpu.fence.Device` the way a GPU behaves
(a fence is done only once the work queued before it has finished), with the
queue advanced by the test instead of by kernels.
"""

from __future__ import annotations

from harli_sgl.core.gpu.fence import Device, Fence


class QueueFence(Fence):
    def __init__(self, device: "QueueDevice"):
        self.device, self.index = device, device.queued

    def done(self) -> bool:
        return self.device.finished >= self.index

    def wait(self) -> None:
        self.device.waits += 1
        self.device.finished = max(self.device.finished, self.index)


class QueueDevice(Device):
    def __init__(self):
        self.queued = 0     # fences recorded (each after the work queued so far)
        self.finished = 0   # fences whose work is done
        self.waits = 0

    def fence(self) -> Fence:
        self.queued += 1
        return QueueFence(self)
