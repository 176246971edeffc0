"""A finetune job's life in the worker: claimed, prepared, started or resumed, published, failed.

Lifecycle, as seen in the store: ``queued`` -> ``running`` (claimed here) ->
training in slots, with step events, progress and periodic checkpoints ->
adapter saved in PEFT format -> published into SGLang's LoRA serving ->
``succeeded`` (so ``succeeded`` always means servable). Bad data fails the job
with the message naming the line; an exception while training fails that job
only. A worker crash re-queues its jobs (``recover_running_jobs``); they resume
from their latest checkpoint, and a job that keeps crashing the worker is
failed after ``MAX_ATTEMPTS``.

Store writes (events, checkpoints, progress) never happen inside a slot: they
are queued on the job as typed records (:mod:`harli_sgl.worker.running_job`)
and flushed after the slot's report is sent, while decode runs again.

Preparing a job (reading its files, parsing and tokenising every record) can
take seconds for a legal 64 MiB upload, so it never runs on the worker's
message loop: a claimed job is prepared on a background thread (the store is
thread-safe; the tokenizer releases the GIL in its batch encode) while the
loop keeps answering grants and heartbeats and trains the other jobs. The job
counts as running meanwhile but offers no pieces; a later tick builds its
trainer. Whatever goes wrong while preparing (bad or unreadable data, running
out of memory) fails that job alone, with a message naming the cause.
Publishing a finished adapter (an HTTP call SGLang may take seconds to answer)
runs on its own background thread for the same reason, and so do checkpoint and
adapter writes (:mod:`harli_sgl.worker.job_writes`): the loop only copies a
job's LoRA and optimizer tensors, and training goes on while they are written.

A full disk is waited out, never a crash: a store write that fails for lack of
space (:class:`StorageFullError`) keeps its events queued in memory, and store
work pauses for ``STORAGE_RETRY_S`` before it is tried again; a status change
that could not be written is retried the same way. Training goes on meanwhile.
A checkpoint that cannot be written is skipped with a warning event (the job
keeps its previous one); a final adapter that cannot be saved for lack of space
is kept in memory and written again once the retry time has passed (any other
failure to save it fails the job).

It stays whole above 300 lines: the full-disk rules above span every step of a
job's life (start, events, publish, fail, flush), and read as one sequence.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from harli_sgl.core.shared_weights import build_model
from harli_sgl.core.trainer.checkpoint import sweep_interrupted_writes
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataError
from harli_sgl.core.trainer.dpo_job import DpoJobTrainer
from harli_sgl.core.trainer.job_trainer import JobTrainer
from harli_sgl.jobs import ids
from harli_sgl.jobs.hyperparameters import SettingError
from harli_sgl.jobs.store import InvalidTransitionError, LeaseLostError, StorageFullError, StoreError
from harli_sgl.jobs.tenants import DEFAULT_TENANT
from harli_sgl.worker.job_data import MAX_SEQ_LEN, micro_batch_size, read_job_data
from harli_sgl.worker.job_results import store_results_file
from harli_sgl.worker.running_job import (CheckpointRecord, EventRecord, PreparedData,
                                          ProgressRecord, RunningJob)

if TYPE_CHECKING:
    import torch

    from harli_sgl.config import HarliConfig
    from harli_sgl.core.pool.arena import LeasedArena
    from harli_sgl.jobs.artifacts import Artifacts
    from harli_sgl.jobs.store import JobStore
    from harli_sgl.worker.publisher import AdapterPublisher
    from harli_sgl.worker.spec import WorkerSpec

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
STORAGE_RETRY_S = 5.0  # how often store writes are retried while the disk is full


class JobLifecycle:
    """Mixed into :class:`~harli_sgl.worker.executor.JobExecutor`, whose ``__init__`` sets
    every attribute declared below; nothing else is shared between the two."""

    # Set by JobExecutor.__init__: the worker's spec, the store and where artifacts go.
    spec: WorkerSpec
    config: HarliConfig
    store: JobStore
    artifacts: Artifacts
    owner: str
    publisher: AdapterPublisher
    # The model every job's skeleton is built on, and the pool's arena (None: pool off).
    hf_config: Any
    fused: dict[str, torch.Tensor]
    tokenizer: Any
    arena: LeasedArena | None
    running: dict[str, RunningJob]
    _prepare_pool: ThreadPoolExecutor
    _prepare_tokenizer: Any
    _publish_pool: ThreadPoolExecutor
    # The lifecycle's own state, initialised by JobExecutor.__init__ before _recover().
    _last_flush: float
    _storage_retry_at: float
    _pending_status: list[tuple[str, str, dict]]
    _recovered: bool

    # -- a full disk ----------------------------------------------------------------------

    def _recover(self) -> None:
        try:
            for job in self.store.recover_running_jobs(self.owner):
                logger.info("job %s was running when the worker stopped; it will resume", job["id"])
        except StorageFullError as e:
            self._storage_full(e)  # retried by a later tick; no job is claimed until then
            return
        self._recovered = True

    def _storage_full_now(self) -> bool:
        return time.monotonic() < self._storage_retry_at

    def _storage_full(self, e: BaseException) -> None:
        logger.warning("the disk is full; store writes wait and are retried in %.0fs (%s)",
                       STORAGE_RETRY_S, e)
        self._storage_retry_at = time.monotonic() + STORAGE_RETRY_S

    def _start(self, job: dict) -> None:
        job_id, suffix = job["id"], job.get("user_provided_suffix")
        tenant = job.get("organization_id") or DEFAULT_TENANT
        entry = RunningJob(job_id, None, ids.fine_tuned_model_name(job_id, suffix, job["model"], tenant),
                           tenant=tenant, dir_name=ids.adapter_dir_name(job_id, suffix))
        self.running[job_id] = entry
        attempts = (job.get("progress") or {}).get("attempts", 1)
        if attempts > MAX_ATTEMPTS:
            self._fail(entry, "worker_crashed",
                       f"the finetune worker stopped {attempts - 1} times while running this job")
            return
        entry.job = job
        logger.info("job %s (tenant %s): started on instance %s (attempt %d); preparing its data",
                    job_id, tenant, self.owner, attempts)
        entry.preparing = self._prepare_pool.submit(self._prepare, job)

    def _prepare(self, job: dict) -> PreparedData:
        """Read and tokenise a job's files (on the prepare thread, never on the loop)."""
        if self._prepare_tokenizer is None:
            from transformers import AutoTokenizer

            # Its own tokenizer: a fast tokenizer's Rust state must not be shared across
            # threads (concurrent calls can fail with "Already borrowed").
            self._prepare_tokenizer = AutoTokenizer.from_pretrained(self.spec.model_path)
        return read_job_data(self.store, self._prepare_tokenizer, job)

    def _finish_start(self, entry: RunningJob) -> None:
        """On the loop, once the job's data is ready: build its trainer, or fail the job."""
        job, future = entry.job, entry.preparing
        entry.job = entry.preparing = None
        job_id = job["id"]
        try:
            data = future.result()
        except DataError as e:
            self._fail(entry, "invalid_training_file", f"invalid training data: {e}")
            return
        except SettingError as e:
            self._fail(entry, "invalid_hyperparameters", f"invalid job settings: {e}")
            return
        except (StoreError, UnicodeDecodeError, ValueError) as e:
            self._fail(entry, "invalid_training_file", str(e))
            return
        except MemoryError:
            self._fail(entry, "invalid_training_file",
                       "the training data is too large to tokenise in the worker's memory")
            return
        except Exception as e:  # whatever the input does, it fails this job only
            logger.exception("job %s: preparing its data failed", job_id)
            self._fail(entry, "invalid_training_file",
                       f"could not prepare the training data: {type(e).__name__}: {e}")
            return
        hp, examples, valid = data.hp, data.examples, data.validation
        cfg = TrainConfig(
            n_epochs=hp.n_epochs, batch_size=hp.batch_size,
            micro_batch_size=micro_batch_size(hp, self.config.micro_batch_size),
            micro_batch_tokens=self.config.micro_batch_tokens,
            learning_rate=hp.learning_rate, lora_r=hp.lora.r, lora_alpha=hp.lora.alpha,
            lora_dropout=hp.lora.dropout, target_modules=tuple(hp.lora.target_modules),
            seed=int(job["seed"]), max_seq_len=MAX_SEQ_LEN,
            checkpoint_every_steps=self.config.checkpoint_every_steps, dpo_beta=hp.beta,
        )
        trainer_cls = DpoJobTrainer if hp.method == "dpo" else JobTrainer
        kwargs = dict(on_event=lambda kind, msg, data: self._on_event(entry, kind, msg, data),
                      checkpoint_dir=lambda step: self._artifact_dir("checkpoints", job_id,
                                                                     f"step-{step:06d}"),
                      saved_tensors_hooks=self.arena.hooks() if self.arena is not None else None,
                      validation_examples=valid)
        base = build_model(self.hf_config, self.fused)
        # This instance holds the job's lease, so no write to its directories is in flight:
        # what a killed holder left half-written (.tmp-*, .old-*) goes before anything resumes.
        swept = sweep_interrupted_writes(self.artifacts.path("checkpoints", job_id))
        if entry.dir_name:  # never the empty prefix: that would be every job's adapter writes
            swept += sweep_interrupted_writes(self.artifacts.path("adapters"), entry.dir_name)
        for path in swept:
            logger.info("job %s: removed %s, left by an interrupted write", job_id, path)
        try:
            ckpt = self.store.latest_checkpoint(job_id)
            if ckpt is not None and os.path.isdir(ckpt["path"]):
                entry.trainer = trainer_cls.resume(ckpt["path"], base, self.tokenizer, examples, cfg,
                                                  **kwargs)
                self._event(entry, "info", f"resumed from the checkpoint at step {ckpt['step_number']}",
                            {"step": ckpt["step_number"]})
            else:
                entry.trainer = trainer_cls(base, self.tokenizer, examples, cfg, **kwargs)
        except (ValueError, RuntimeError) as e:
            self._fail(entry, "invalid_hyperparameters", f"cannot start training: {e}")
            return
        p = entry.trainer.progress
        entry.estimate.start(p.step, time.time())
        message = (f"training {len(examples)} examples for {p.total_steps} steps "
                   f"({cfg.n_epochs} epochs, batch size {cfg.batch_size})")
        logger.info("job %s: %s", job_id, message)
        self._event(entry, "info", message, {"examples": len(examples), "total_steps": p.total_steps})
        self.flush()

    def _on_event(self, job: RunningJob, kind: str, message: str, data: dict) -> None:
        if kind == "step":
            job.estimate.step_done(data["step"], time.time())
            job.records.append(EventRecord("info", message, data, "metrics",
                                           job.estimate.finish_at(data["total_steps"])))
            return
        # Milestones (epochs, checkpoints, the end of training) reach the server log too:
        # an operator reads logs first. Steps stay in the job's events only.
        logger.info("job %s: %s", job.job_id, message)
        if kind == "checkpoint":
            job.records.append(CheckpointRecord(data["step"], data["path"], data["metrics"]))
        else:
            self._event(job, "info", message, data)

    def _publish_call(self, name: str, path: str) -> tuple[bool, str]:
        """On the publish thread: never raises, whatever the server answers."""
        try:
            return self.publisher.publish(name, path)
        except Exception as e:  # e.g. a 200 whose body is not JSON: retried like a hiccup
            logger.exception("publishing adapter %s failed", name)
            return False, f"publishing failed: {type(e).__name__}: {e}"

    def _publish(self, job: RunningJob) -> None:
        if job.publishing is None:
            self.flush()  # every event of the job is stored before it can succeed
            if job.records:
                return  # not stored yet (the disk is full): publish on a later tick
            if job.result_files is None and not self._store_results(job):
                return  # the disk is full: stored on a later tick
            job.publishing = self._publish_pool.submit(self._publish_call, job.name,
                                                       job.adapter_path)
        if not job.publishing.done():
            return  # the loop goes on; a later tick sees the answer
        ok, why = job.publishing.result()
        job.publishing = None
        if ok:
            try:
                self.store.set_status(job.job_id, "succeeded", fine_tuned_model=job.name,
                                      owner=self.owner, result_files=job.result_files)
            except InvalidTransitionError:
                pass  # cancelled while publishing: the cancel wins
            except LeaseLostError:
                self._lost(job)
                return
            else:
                logger.info("job %s succeeded: %s is served", job.job_id, job.name)
            self.running.pop(job.job_id, None)
        elif why.startswith("server refused"):
            self._fail(job, "publish_failed", why)

    def _store_results(self, job: RunningJob) -> bool:
        """Store the job's results file (once); False if the disk is full (tried again later)."""
        try:
            job.result_files = [store_results_file(self.store, job.job_id, job.tenant)]
        except StorageFullError as e:
            self._storage_full(e)
            return False
        except StoreError as e:  # e.g. the tenant's storage quota: the job still succeeds
            logger.warning("job %s: its results file was not stored: %s", job.job_id, e)
            job.result_files = []
            self._event(job, "warn", f"the results file was not stored: {e}", {})
            self.flush()
        return True

    def _fail(self, job: RunningJob, code: str, message: str) -> None:
        logger.warning("job %s failed (%s): %s", job.job_id, code, message)
        self.flush()
        error = {"code": code, "message": message, "param": None}
        try:
            self.store.set_status(job.job_id, "failed", error=error, owner=self.owner)
        except (InvalidTransitionError, LeaseLostError):
            pass  # finished, cancelled, or another instance runs it now: not ours to fail
        except StorageFullError as e:
            self._storage_full(e)
            self._pending_status.append((job.job_id, "failed", {"error": error}))
        self._drop(job)

    def _drop(self, job: RunningJob) -> None:
        if job.preparing is not None:
            job.preparing.cancel()  # once started it runs to its end; the result is dropped
            job.preparing = None
        if job.trainer is not None:
            job.trainer.close()
        self.running.pop(job.job_id, None)

    # -- store writes, outside slots -------------------------------------------------------

    def _event(self, job: RunningJob, level: str, message: str, data: dict,
               type: str = "message") -> None:
        job.records.append(EventRecord(level, message, data, type))

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._storage_full_now():
            return
        for job in list(self.running.values()):
            records, job.records = job.records, []
            for i, record in enumerate(records):
                try:
                    self._write(job, record)
                except LeaseLostError:
                    self._lost(job)
                    break
                except StorageFullError as e:
                    job.records[:0] = records[i:]  # kept, in order, for the next flush
                    self._storage_full(e)
                    return
                except StoreError as e:
                    logger.warning("job %s: could not record %r: %s", job.job_id, record, e)

    def _write(self, job: RunningJob, record) -> None:
        if isinstance(record, CheckpointRecord):
            self.store.add_checkpoint(job.job_id, record.step, record.path, record.metrics,
                                      owner=self.owner)
            job.checkpointed = True
        elif isinstance(record, ProgressRecord):
            self.store.update_progress(job.job_id, **record.progress, owner=self.owner)
        elif isinstance(record, EventRecord):
            self.store.add_event(job.job_id, record.level, record.message, record.data,
                                 record.type)
            if record.type == "metrics":
                d = record.data
                self.store.update_progress(job.job_id, d["trained_tokens"], d["step"],
                                           d["total_steps"], owner=self.owner,
                                           estimated_finish=record.estimated_finish)
        else:
            raise TypeError(f"not a store record: {record!r}")

    def _artifact_dir(self, kind: str, *parts: str) -> str:
        path = self.artifacts.path(kind, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _preempt_for_fair_share(self) -> None:
        """At a checkpoint boundary, give a place back if another tenant waits for its share.

        Only while every place here is taken: a free place goes to the waiting tenant on
        the next claim anyway (the claim serves the tenant with the fewest running jobs
        first), and preempting then would take a second place from the same tenant before
        the first was filled. A job is asked about at the first poll after a checkpoint of
        it is recorded, with no write in flight, so it resumes from that checkpoint and
        redoes only the steps it trained since (fewer than ``checkpoint_every_steps``).
        """
        if len(self.running) < self.config.max_running_jobs:
            return
        for job in list(self.running.values()):
            # Records not yet stored may hold a newer checkpoint: wait for their flush.
            if not job.checkpointed or job.write is not None or job.records:
                continue
            job.checkpointed = False
            if job.trainer is None or job.trainer.done:
                continue
            try:
                for_tenant = self.store.preempt_for_fair_share(job.job_id, self.owner)
            except StoreError as e:
                logger.warning("job %s: the fair-share check failed: %s", job.job_id, e)
                return
            if for_tenant is not None:
                logger.info("job %s (tenant %s): preempted at its checkpoint so that tenant %s "
                            "gets its fair share of running places; it resumes later",
                            job.job_id, job.tenant, for_tenant)
                self._drop(job)
                return  # one place at a time: the next is decided once this one is taken

    def _lost(self, job: RunningJob) -> None:
        """This instance no longer holds the job's lease: stop it, write nothing more.

        It stalled past its lease and another instance took the job over (or will),
        resuming from the last checkpoint; going on here would train it twice.
        """
        logger.warning("job %s: this instance (%s) lost its lease; another instance resumes it",
                       job.job_id, self.owner)
        job.records.clear()
        job.adapter_path = None
        self._drop(job)

