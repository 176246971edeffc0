"""Worker -> scheduler: readiness, work state, slot and piece reports, acknowledgements."""

from __future__ import annotations

from dataclasses import dataclass, field

from harli_sgl.core.iteration import SlotWork
from harli_sgl.core.message.base import FromWorker, Heartbeat, types_of

__all__ = ["CORUN_SLOT", "CoRunStopped", "FREE_RUN_SLOT", "FromWorker", "Heartbeat", "ReclaimAck",
           "SlotReport", "TYPES", "WorkerHello", "WorkerState"]


@dataclass(frozen=True, slots=True)
class WorkerHello(FromWorker):
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
    # Green contexts were asked for (``mps_green``) and the driver refused them.
    green_contexts_failed: bool = False


@dataclass(frozen=True, slots=True)
class WorkerState(FromWorker):
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
class SlotReport(FromWorker):
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
class CoRunStopped(FromWorker):
    seq: int
    # When the last piece ended: from then on nothing of the worker runs beside decode.
    stopped_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ReclaimAck(FromWorker):
    lease_id: int
    moved_bytes: int = 0


TYPES = types_of(FromWorker)
