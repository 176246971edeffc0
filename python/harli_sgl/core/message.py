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
CoRunStart             sched -> worker     train piece after piece on these cores, beside decode
CoRunStop              sched -> worker     stop co-running at the next piece boundary
CoRunStopped           worker -> sched     co-running stopped (answers CoRunStop)
LeaseGrant             sched -> worker     KV pages lent as tensor storage
ReclaimRequest         sched -> worker     give these leased pages back
ReclaimAck             worker -> sched     the pages are no longer used; safe to reuse
Shutdown               sched -> worker     exit cleanly
=====================  ==================  =============================================

Units. Finetune work is counted in *token-layers*: one token through one decoder
layer's forward pass is 1 unit; its backward pass is 2 units (backward costs about
twice the forward). A slot of ``budget_units`` therefore maps to a predictable
amount of compute whatever the layer chunking turns out to be.

Time. Every timestamp is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for
all processes of a host, so the scheduler can lay the worker's pieces over its
own iterations and measure how much of each iteration ran beside training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harli_sgl.core.iteration import SlotWork


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sent_at: float
    # Worker -> scheduler: seconds since the worker's message loop last turned. The
    # heartbeat itself comes from a thread of its own, so a loop busy with long
    # but legitimate work (or starved of CPU on a busy host) still proves the
    # process alive; only a loop stalled far beyond any piece is declared hung.
    loop_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FreeCompute:
    """Scheduler -> worker, every few seconds: the compute this instance could give one
    more job, in work units per second (None: not known yet).

    The worker writes it into the fleet's store with its instance heartbeat, so that a
    queued job is pulled by the instance with the most slack (see worker/fleet.py).
    """
    units_per_s: float | None


@dataclass(frozen=True, slots=True)
class WorkerHello:
    pid: int
    generation: int
    num_layers: int
    base_param_bytes: int
    # Base-weight bytes the worker holds outside shared memory: 0 means zero-copy;
    # None: unknown (frozen parameters on a GPU, see shared_weights.private_bytes).
    private_base_bytes: int | None = 0
    # The heartbeat thread's id: it stays in the normal scheduling class when the
    # scheduler moves the worker's compute threads to SCHED_IDLE.
    liveness_tid: int = 0
    # Where the frozen base parameters live: {"dev:inode": bytes} (shared_weights.shm_segments).
    base_weight_segments: dict = field(default_factory=dict)


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
    # Absolute bound (time.monotonic()) when set: a co-running worker reaches the
    # grant only at its next piece boundary, and that wait counts against the budget.
    deadline: float = 0.0


@dataclass(frozen=True, slots=True)
class SlotReport:
    slot_id: int
    # What ran, by cost kind: the same SlotWork the policy planned and the trainer
    # accounted, so the coordinator adds it up instead of rebuilding it.
    work: SlotWork
    tokens: int
    duration_ms: float
    # Tokens whose backward pass completed in this slot (finetune throughput).
    trained_tokens: int = 0
    job_id: str | None = None
    # When the work ran (time.monotonic()); for co-run pieces, what overlapped decode.
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def units(self) -> int:
        return self.work.units


# SlotReport.slot_id of work not granted slot by slot: greedy free-run slices and
# the pieces of the concurrent arrangement.
FREE_RUN_SLOT = -1
CORUN_SLOT = -2


@dataclass(frozen=True, slots=True)
class SetFreeRun:
    enabled: bool


@dataclass(frozen=True, slots=True)
class CoRunStart:
    """Train piece after piece, beside decode, on ``cpus`` (CPU) or ``share`` of the SMs (GPU).

    The worker keeps going until :class:`CoRunStop`, reporting each piece as a
    ``SlotReport`` with ``slot_id == CORUN_SLOT``. A ``SlotGrant`` that arrives
    meanwhile is a serial top-up: it runs on the whole device, then co-running
    resumes.
    """

    share: float
    cpus: tuple[int, ...] = ()
    # Start-up profile: co-run the synthetic workload instead of a job.
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class CoRunStop:
    seq: int


@dataclass(frozen=True, slots=True)
class CoRunStopped:
    seq: int
    # When the last piece ended: from then on nothing of the worker runs beside decode.
    stopped_at: float = 0.0


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


# What each side sends; each process's Dispatcher handles exactly the other side's list
# (test/core/test_message_directions.py holds both to it).
SCHEDULER_TO_WORKER = (Heartbeat, SlotGrant, SetFreeRun, CoRunStart, CoRunStop, LeaseGrant,
                       ReclaimRequest, Shutdown, FreeCompute)
WORKER_TO_SCHEDULER = (Heartbeat, WorkerHello, WorkerState, SlotReport, CoRunStopped, ReclaimAck)
