"""A job this worker runs, and the store writes it has queued.

Store writes never happen inside a slot: the executor queues them on the job
(:attr:`RunningJob.records`) and flushes them between slots, while decode runs
again. Each kind of write is its own type, so the flush dispatches on types
rather than on sentinel strings in a tuple:

* :class:`EventRecord`: a job event (a message, or step metrics that also move
  the job's progress);
* :class:`CheckpointRecord`: a checkpoint whose directory is complete and in
  place, to be listed;
* :class:`ProgressRecord`: the job's final progress, once its adapter is written.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Union

from harli_sgl.jobs.hyperparameters import Hyperparameters
from harli_sgl.jobs.tenants import DEFAULT_TENANT
from harli_sgl.worker.finish_estimate import FinishEstimate

if TYPE_CHECKING:
    from harli_sgl.core.trainer.job_trainer import DueCheckpoint, JobTrainer
    from harli_sgl.core.trainer.snapshot import Snapshot


@dataclass(frozen=True)
class EventRecord:
    level: str  # "info", "warn" or "error"
    message: str
    data: dict
    type: str = "message"  # "metrics": a step's numbers, which also update progress
    estimated_finish: int | None = None  # a metrics event's estimate (worker/finish_estimate.py)


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    path: str
    metrics: dict  # step and the CHECKPOINT_METRICS known (core/trainer/reports.py)


@dataclass(frozen=True)
class ProgressRecord:
    progress: dict  # JobStore.update_progress keyword arguments


StoreRecord = Union[EventRecord, CheckpointRecord, ProgressRecord]


class PendingWrite(NamedTuple):
    """A checkpoint or adapter write in flight (see worker/job_writes.py)."""

    future: Future  # of SnapshotWriter.submit
    path: str
    checkpoint: DueCheckpoint | None  # None: the finished adapter


class FinishedAdapter(NamedTuple):
    """A trained job's adapter, copied off the model and not yet written."""

    snapshot: Snapshot  # kept until written: a full disk is waited out
    progress: dict


@dataclass
class RunningJob:
    job_id: str
    trainer: JobTrainer | None
    name: str
    served_units: int = 0
    tenant: str = DEFAULT_TENANT
    dir_name: str = ""  # the adapter's directory under adapters/ (ids.adapter_dir_name)
    adapter_path: str | None = None   # set once training is done and the adapter saved
    records: list[StoreRecord] = field(default_factory=list)  # queued store writes, in order
    # While its data is read and tokenised off the loop: the job row and the pending result.
    job: dict | None = None
    preparing: Future | None = None
    publishing: Future | None = None  # the pending AdapterPublisher.publish call
    write: PendingWrite | None = None  # the job's one checkpoint or adapter write in flight
    finished: FinishedAdapter | None = None  # trained, trainer closed, adapter not yet written
    deferring: bool = False  # a checkpoint was deferred and has not been taken since
    # A checkpoint was recorded since the last fair-share check: a point where the job can
    # be preempted without losing training (see JobLifecycle._preempt_for_fair_share).
    checkpointed: bool = False
    estimate: FinishEstimate = field(default_factory=FinishEstimate)
    result_files: list[str] | None = None  # stored once trained, before it is published


@dataclass(frozen=True)
class PreparedData:
    hp: Hyperparameters
    examples: list
    validation: list
