"""The job executor's checkpoint and adapter writes: taken on the loop, written off it.

Between slots the executor asks each job's trainer for what is due: a
checkpoint (every ``checkpoint_every_steps``) or, once trained, its adapter. It
takes a :class:`~harli_sgl.core.trainer.snapshot.Snapshot` on the loop (CPU
copies of the LoRA and optimizer tensors) and hands it to the
:class:`~harli_sgl.worker.writer.SnapshotWriter`; a later tick collects the
outcome. The rules:

* one write per job in flight. A checkpoint that comes due while the job's
  previous write is still running is deferred to the job's next step boundary
  (``JobTrainer.defer_checkpoint``), with one event saying so per deferral;
* a checkpoint is recorded (its store row queued) only once its directory has
  been renamed into place, so a resumed job never starts from half of one;
* a trained job's adapter is copied and its LoRA layers unloaded from the shared
  base model at once; the job is published (and only then ``succeeded``) once
  the adapter directory is written;
* failures keep the synchronous semantics: a checkpoint that cannot be written
  is a warning event (the job keeps its previous checkpoint); an adapter that
  cannot be written for lack of space stays in memory and is written again
  after the store's retry pause; any other failure to save it fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from harli_sgl.jobs.store import is_storage_full
from harli_sgl.worker.running_job import FinishedAdapter, PendingWrite, ProgressRecord, RunningJob
from harli_sgl.worker.writer import SnapshotWriter

logger = logging.getLogger(__name__)


class JobWrites:
    """A running job's checkpoint and adapter writes, between slots.

    Args:
        writer: the background writer the snapshots go to.
        artifact_dir: ``(kind, *parts) -> path`` in the fleet's artifacts.
        event: ``(job, level, message, data)``: a job event for the store.
        fail: ``(job, code, message)``: fail the job.
        storage_full: ``(error)``: the disk is full; store work pauses.
    """

    def __init__(self, writer: SnapshotWriter, *, artifact_dir: Callable[..., str],
                 event: Callable[[RunningJob, str, str, dict], None],
                 fail: Callable[[RunningJob, str, str], None],
                 storage_full: Callable[[BaseException], None]):
        self.writer = writer
        self._artifact_dir = artifact_dir
        self._event = event
        self._fail = fail
        self._storage_full = storage_full

    def start_checkpoint(self, job: RunningJob) -> None:
        t = job.trainer
        if job.write is not None:  # one write per job in flight: this one waits a step
            if not job.deferring and job.write.checkpoint is not None:
                self._event(job, "info", f"the checkpoint at step {t.completed_steps} is deferred "
                            f"to a later step: the one at step {job.write.checkpoint.step} is still "
                            "being written", {"step": t.completed_steps})
            job.deferring = True
            t.defer_checkpoint()
            return
        job.deferring = False
        try:
            due = t.take_due_checkpoint()
        except Exception as e:  # e.g. out of memory for the copy: training goes on
            logger.exception("job %s: taking the checkpoint failed", job.job_id)
            self._checkpoint_failed(job, t.completed_steps, e)
            return
        job.write = PendingWrite(self.writer.submit(due.snapshot, due.path), due.path, due)

    def save_adapter(self, job: RunningJob) -> None:
        """Snapshot a finished job's adapter, unload its LoRA layers, and write it (or write it
        again, after a full disk)."""
        if job.finished is None:
            t = job.trainer
            p = t.progress
            try:
                snapshot = t.snapshot_adapter()
            except Exception as e:
                logger.exception("job %s: copying the adapter failed", job.job_id)
                self._fail(job, "adapter_save_failed",
                           f"the trained adapter could not be saved: {type(e).__name__}: {e}")
                return
            # Training is done: the estimate is its last step's time (see finish_estimate.py).
            job.finished = FinishedAdapter(snapshot, {
                "trained_tokens": p.trained_tokens, "step": p.step, "total_steps": p.total_steps,
                "estimated_finish": job.estimate.finish_at(p.total_steps)})
            t.close()  # the LoRA layers leave the shared base model now, not after the write
            job.trainer = None
        path = self._artifact_dir("adapters", job.dir_name)  # shared by the fleet's instances
        job.write = PendingWrite(self.writer.submit(job.finished.snapshot, path), path, None)

    def collect(self, job: RunningJob) -> None:
        """Between slots: record a finished write (the files are complete and renamed)."""
        w = job.write
        if w is None or not w.future.done():
            return
        job.write = None
        try:
            w.future.result()
        except Exception as e:
            if w.checkpoint is not None:
                self._checkpoint_failed(job, w.checkpoint.step, e)
            else:
                self._adapter_failed(job, e)
            return
        if w.checkpoint is not None:
            job.trainer.checkpoint_written(w.checkpoint)  # its trainer outlives its writes
            return
        job.records.append(ProgressRecord(job.finished.progress))
        self._event(job, "info", f"adapter saved as {job.name}; publishing it for serving",
                    {"fine_tuned_model": job.name})
        job.finished = None
        job.adapter_path = w.path

    def _checkpoint_failed(self, job: RunningJob, step: int, e: BaseException) -> None:
        # The job goes on from its previous checkpoint, if any.
        full = is_storage_full(e)
        if full:
            self._storage_full(e)
        else:
            logger.error("job %s: the checkpoint at step %d failed: %s", job.job_id, step, e,
                         exc_info=e)
        cause = "the disk is full" if full else f"{type(e).__name__}: {e}"
        self._event(job, "warn", f"the checkpoint at step {step} was not written ({cause}); "
                    "training continues", {"step": step})

    def _adapter_failed(self, job: RunningJob, e: BaseException) -> None:
        if is_storage_full(e):
            self._storage_full(e)  # the snapshot stays in memory; written once there is room
            return
        logger.error("job %s: saving the adapter failed: %s", job.job_id, e, exc_info=e)
        self._fail(job, "adapter_save_failed",
                   f"the trained adapter could not be saved: {type(e).__name__}: {e}")
