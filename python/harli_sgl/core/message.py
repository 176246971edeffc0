"""Every message exchanged between the HarliScheduler and the finetune worker.

All scheduler <-> worker traffic is one of these frozen dataclasses, sent over a
typed ZMQ queue (:mod:`harli_sgl.core.transport`) and routed by type through one
:class:`~harli_sgl.core.dispatch.Dispatcher` per process. They are plain data
(ints, floats, strings, tuples) so that the engine-agnostic core runs on a
machine without sglang, msgspec or even pyzmq.

Directions:

=====================  ==================  =============================================
message                direction           meaning
=====================  ==================  =============================================
Heartbeat              both                liveness; a silent peer is declared hung
WorkerHello            worker -> sched     the worker mapped the weights and is ready
WorkerState            worker -> sched     whether it has work, and the next piece's size
SlotGrant              sched -> worker     run up to ``budget_units`` of finetune work now
SlotReport             worker -> sched     what a slot did: units, tokens, measured time
SetFreeRun             sched -> worker     greedy mode: train without waiting for grants
LeaseGrant             sched -> worker     KV pages lent as tensor storage
ReclaimRequest         sched -> worker     give these leased pages back
ReclaimAck             worker -> sched     the pages are no longer used; safe to reuse
Shutdown               sched -> worker     exit cleanly
=====================  ==================  =============================================

Units. Finetune work is counted in *token-layers*: one token through one decoder
layer's forward pass is 1 unit; its backward pass is 2 units (backward costs about
twice the forward). A slot of ``budget_units`` therefore maps to a predictable
amount of compute whatever the layer chunking turns out to be.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sent_at: float


@dataclass(frozen=True, slots=True)
class WorkerHello:
    pid: int
    generation: int
    num_layers: int
    base_param_bytes: int
    # Base-weight bytes the worker holds outside shared memory: 0 means zero-copy.
    private_base_bytes: int = 0


@dataclass(frozen=True, slots=True)
class WorkerState:
    has_work: bool
    job_id: str | None = None
    micro_batch_tokens: int = 0
    # Smallest amount of work the worker can make progress with (one layer of
    # the current piece); grants below it would be wasted.
    min_piece_units: int = 0
    # The pieces the next slot would run, in order, as (CostKind, units), so
    # the scheduler can size a grant to whole pieces with its co-run model.
    next_pieces: tuple[tuple[int, int], ...] = ()
    # Saved-activation bytes a micro-batch needs (measured): how much pool to lend.
    wanted_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SlotGrant:
    slot_id: int
    budget_units: int
    # Wall-clock bound the worker must respect whatever its unit estimate says.
    budget_ms: float
    # Fraction of the device the slot may use (SMs on GPU, cores on CPU);
    # 1.0 in serial mode, where the slot has the whole device between iterations.
    device_share: float = 1.0
    # Start-up profile: run a synthetic training workload instead of a job.
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class SlotReport:
    slot_id: int
    units: int
    tokens: int
    duration_ms: float
    pieces: int
    # Tokens whose backward pass completed in this slot (finetune throughput).
    trained_tokens: int = 0
    job_id: str | None = None
    # Of ``units``, those in layer-backward and in head pieces (see CostKind).
    units_bwd: int = 0
    units_head: int = 0


@dataclass(frozen=True, slots=True)
class SetFreeRun:
    enabled: bool


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    lease_id: int
    # Half-open page ranges [start, end) of the unified pool.
    page_ranges: tuple[tuple[int, int], ...]
    page_bytes: int


@dataclass(frozen=True, slots=True)
class ReclaimRequest:
    lease_id: int


@dataclass(frozen=True, slots=True)
class ReclaimAck:
    lease_id: int
    moved_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Shutdown:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What actually travels: the message plus the worker incarnation it belongs to.

    The scheduler's sockets outlive any one worker. Tagging every message with the
    worker's generation lets each side drop traffic queued for a dead predecessor.
    """

    generation: int
    message: object = field(default=None)


SCHEDULER_TO_WORKER = (Heartbeat, SlotGrant, SetFreeRun, LeaseGrant,
                       ReclaimRequest, Shutdown)
WORKER_TO_SCHEDULER = (Heartbeat, WorkerHello, WorkerState, SlotReport, ReclaimAck)
