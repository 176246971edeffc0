"""Scheduler -> worker: grants, co-run control, pool leases, free compute, shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from harli_sgl.core.message.base import Heartbeat, ToWorker, types_of

__all__ = ["CoRunStart", "CoRunStop", "FreeCompute", "Heartbeat", "LeaseGrant", "ReclaimRequest",
           "SetFreeRun", "Shutdown", "SlotGrant", "ToWorker", "TYPES"]


@dataclass(frozen=True, slots=True)
class FreeCompute(ToWorker):
    """Every few seconds: the compute this instance could give one more job, in work
    units per second (None: not known yet).

    The worker writes it into the fleet's store with its instance heartbeat, so that a
    queued job is pulled by the instance with the most slack (see worker/fleet.py).
    """
    units_per_s: float | None


@dataclass(frozen=True, slots=True)
class SlotGrant(ToWorker):
    slot_id: int
    budget_units: int
    # Wall-clock bound the worker must respect whatever its unit estimate says.
    budget_ms: float
    # Start-up profile: run a synthetic training workload instead of a job.
    synthetic: bool = False
    # Absolute bound (time.monotonic()) when set: a co-running worker reaches the
    # grant only at its next piece boundary, and that wait counts against the budget.
    deadline: float = 0.0


@dataclass(frozen=True, slots=True)
class SetFreeRun(ToWorker):
    enabled: bool


@dataclass(frozen=True, slots=True)
class CoRunStart(ToWorker):
    """Train piece after piece, beside decode, on ``cpus`` (CPU) or on ``share`` of the
    GPU's SMs: the worker's green context of ``num_sms`` SMs (0: its plain stream, the
    whole device or its fixed MPS share; see ``core/gpu/share.py``; UNTESTED on a GPU).

    The worker keeps going until :class:`CoRunStop`, reporting each piece as a
    ``SlotReport`` with ``slot_id == CORUN_SLOT``. A ``SlotGrant`` that arrives
    meanwhile is a serial top-up: it runs on the whole device, then co-running
    resumes.
    """

    cpus: tuple[int, ...] = ()
    # Start-up profile: co-run the synthetic workload instead of a job.
    synthetic: bool = False
    share: float = 1.0
    num_sms: int = 0


@dataclass(frozen=True, slots=True)
class CoRunStop(ToWorker):
    seq: int


@dataclass(frozen=True, slots=True)
class LeaseGrant(ToWorker):
    lease_id: int
    # Half-open page ranges [start, end) of the unified pool.
    page_ranges: tuple[tuple[int, int], ...]
    page_bytes: int


@dataclass(frozen=True, slots=True)
class ReclaimRequest(ToWorker):
    lease_id: int


@dataclass(frozen=True, slots=True)
class Shutdown(ToWorker):
    reason: str = ""


TYPES = types_of(ToWorker)
