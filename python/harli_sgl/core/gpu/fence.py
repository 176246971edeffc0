"""Fences: points in a process's queue of device work, behind one narrow interface.

On a CPU every op has finished when the call returns, so a fence is done the
moment it is recorded (:class:`HostDevice`). On a GPU the host only queues
kernels: the host clock runs ahead of the work, and memory a kernel still
reads can look free. :class:`CudaDevice` records a CUDA event on the current
stream (UNTESTED: no GPU has been lent). Two orderings are built on fences and
unit-tested on CPU with a device whose fences complete when the test says so:

* :class:`DeviceDeadline`: a slot's budget on device time. Before each piece
  the host knows its clock plus the predicted time of the pieces it queued
  since the last fence; only when that could reach the deadline does it wait
  on the last fence (one host wait, not one per piece) and judge the deadline
  on the device's real progress.
* :class:`PendingGrants`: the scheduler hands lent KV pages to the worker only
  after a fence recorded when they were lent has completed (the engine's
  kernels that last used them are done); a reclaim of pages not yet handed
  over cancels the hand-over. The worker's side (its kernels on reclaimed
  pages done before ``ReclaimAck``) is a fence waited in the worker.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any


class Fence(ABC):
    @abstractmethod
    def done(self) -> bool:
        """The work queued before this fence has finished (never blocks)."""

    @abstractmethod
    def wait(self) -> None:
        """Block the host until :meth:`done`."""


class Device(ABC):
    synchronous: bool = False  # every op finished when its call returned

    @abstractmethod
    def fence(self) -> Fence:
        """A fence after all work this process queued so far on its current stream."""

    def sync(self) -> None:
        self.fence().wait()


class _DoneFence(Fence):
    def done(self) -> bool:
        return True

    def wait(self) -> None:
        return None


class HostDevice(Device):
    """The CPU: synchronous, so every fence is already done."""

    synchronous = True

    def fence(self) -> Fence:
        return _DoneFence()


class _CudaFence(Fence):
    def __init__(self, events: list[Any]):
        self.events = events

    def done(self) -> bool:
        return all(e.query() for e in self.events)

    def wait(self) -> None:
        for e in self.events:
            e.synchronize()


class CudaDevice(Device):
    """A CUDA event per fence on the current stream and on each of ``streams`` (the
    engine's forward stream, under SGLang's overlap loop). UNTESTED: no GPU has been lent.
    """

    def __init__(self, streams: tuple[Any, ...] = ()):
        self.streams = streams

    def fence(self) -> Fence:
        import torch

        events = []
        for stream in (torch.cuda.current_stream(), *self.streams):
            event = torch.cuda.Event()
            event.record(stream)
            events.append(event)
        return _CudaFence(events)


def device_for(kind: str) -> Device:
    """``cuda`` -> :class:`CudaDevice`; anything else -> :class:`HostDevice`."""
    return CudaDevice() if kind == "cuda" else HostDevice()


class DeviceDeadline:
    """A slot's deadline judged on device time, with as few host waits as it can.

    Args:
        device: where the pieces run.
        deadline: a ``time.perf_counter()`` value.
        ms_per_unit: the predicted device time of a unit of work (0: unknown, so
            every boundary with queued work fences).
    """

    def __init__(self, device: Device, deadline: float, ms_per_unit: float = 0.0):
        self.device = device
        self.deadline = deadline
        self.ms_per_unit = ms_per_unit
        self._observed = 0.0
        self.queued_ms = 0.0
        self.queued = False
        self.fences_waited = 0
        self._last: Fence | None = None
        self._started = time.perf_counter()
        self._units = 0

    @property
    def observed_ms_per_unit(self) -> float:
        """Device ms per unit seen at the last fence (0 before one): the next slot's prediction."""
        return self._observed

    def passed(self, now: float | None = None) -> bool:
        """Before a piece: has the device reached the deadline (so the slot stops)?"""
        now = time.perf_counter() if now is None else now
        if self.queued and (self.ms_per_unit <= 0
                            or now + self.queued_ms / 1000.0 >= self.deadline):
            self._last.wait()
            self.fences_waited += 1
            self.queued, self.queued_ms = False, 0.0
            now = time.perf_counter()
            if self._units:
                self._observed = (now - self._started) * 1000.0 / self._units
        return now >= self.deadline

    def launched(self, units: int) -> None:
        """A piece of ``units`` was queued."""
        if self.device.synchronous:
            return
        self._last = self.device.fence()
        self._units += units
        self.queued = True
        self.queued_ms += units * self.ms_per_unit


class PendingGrants:
    """Lent pages held back until the engine's fence from the moment of lending is done."""

    def __init__(self, device: Device):
        self.device = device
        self._held: OrderedDict[int, tuple[Any, Fence]] = OrderedDict()

    def lend(self, lease_id: int, grant: Any) -> None:
        self._held[lease_id] = (grant, self.device.fence())

    def ready(self) -> list[Any]:
        """The grants whose fence is done, in lending order (a later one never overtakes)."""
        out = []
        while self._held:
            lease_id, (grant, fence) = next(iter(self._held.items()))
            if not fence.done():
                break
            del self._held[lease_id]
            out.append(grant)
        return out

    def cancel(self, lease_id: int) -> bool:
        """A reclaim of a lease: True if it was never handed over (no worker ack will come)."""
        return self._held.pop(lease_id, None) is not None

    def clear(self) -> None:
        """The worker is gone: nothing held will be handed over."""
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)
