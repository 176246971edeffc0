"""The worker's job executor: finetune jobs from the store, trained inside granted slots.

Sharing the worker between jobs. Up to ``--harli-max-running-jobs`` jobs run
at once (the rest wait ``queued``, first come first served). Each running job
has its own HF model skeleton whose base weights are views of the *same*
shared serving tensors (so a job costs its LoRA weights, optimizer state and
in-flight activations, never a copy of the model). Every slot goes to the
running job that has been served the fewest work units so far: equal compute
for every running job, whatever its micro-batch size, and a newly started job
catches up with no one starving. A slot runs whole pieces of that one job.
Tenants come first (``_pick``): a slot goes to the tenant served the fewest
units while it had jobs here, then to that tenant's least-served job, so a
tenant with three running jobs and a tenant with one get half the slot work
each. A tenant whose jobs arrive joins at the least-served tenant's count:
it shares from then on, rather than catching up on what others got before.
One exception bounds memory: a micro-batch's saved activations live from its
first forward piece to its last backward piece (about 1.3 GB for 4 examples of
1024 tokens of the default model, in fp32), so a job that holds them keeps the
slots until that micro-batch is done, and a job served ahead of its share runs
only to that point. The worker thus holds one micro-batch's activations at a
time, however many jobs run; fairness holds at micro-batch granularity.

Lifecycle, as seen in the store: ``queued`` -> ``running`` (claimed here) ->
training in slots, with step events, progress and periodic checkpoints ->
adapter saved in PEFT format -> published into SGLang's LoRA serving ->
``succeeded`` (so ``succeeded`` always means servable). Bad data fails the job
with the message naming the line; an exception while training fails that job
only. A worker crash re-queues its jobs (``recover_running_jobs``); they resume
from their latest checkpoint, and a job that keeps crashing the worker is
failed after ``MAX_ATTEMPTS``.

Store writes (events, progress) never happen inside a slot: they are queued
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
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from harli_sgl.core.message import SlotGrant, SlotReport, WorkerState
from harli_sgl.core.shared_weights import build_model, private_bytes
from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataError, load_examples
from harli_sgl.core.trainer.job_trainer import JobTrainer, TrainingDiverged
from harli_sgl.jobs import ids
from harli_sgl.jobs.hyperparameters import Hyperparameters, SettingError
from harli_sgl.jobs.store import (InvalidTransitionError, LeaseLostError, StorageFullError,
                                  StoreError)
from harli_sgl.jobs.stores import artifacts_of, open_store
from harli_sgl.jobs.tenants import DEFAULT_TENANT
from harli_sgl.worker import malloc
from harli_sgl.worker.fleet import FleetMember
from harli_sgl.worker.profile_workload import ProfileWorkload
from harli_sgl.worker.publisher import AdapterPublisher
from harli_sgl.worker.job_writes import FinishedAdapter, JobWrites, PendingWrite
from harli_sgl.worker.spec import WorkerSpec
from harli_sgl.worker.writer import SnapshotWriter

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
MAX_ATTEMPTS = 3
MAX_SEQ_LEN = 1024
NEXT_PIECES = 24  # pieces announced to the scheduler for slot sizing
FLUSH_EVERY_S = 1.0
STORAGE_RETRY_S = 5.0  # how often store writes are retried while the disk is full
CLOSE_WRITE_WAIT_S = 30.0  # how long a stopping worker waits for writes in flight


@dataclass
class RunningJob:
    job_id: str
    trainer: JobTrainer | None
    name: str
    served_units: int = 0
    tenant: str = DEFAULT_TENANT
    dir_name: str = ""  # the adapter's directory under adapters/ (ids.adapter_dir_name)
    adapter_path: str | None = None   # set once training is done and the adapter saved
    events: list[tuple[str, str, dict, str]] = field(default_factory=list)
    # While its data is read and tokenised off the loop: the job row and the pending result.
    job: dict | None = None
    preparing: Future | None = None
    publishing: Future | None = None  # the pending AdapterPublisher.publish call
    write: PendingWrite | None = None  # the job's one checkpoint or adapter write in flight
    finished: FinishedAdapter | None = None  # trained, trainer closed, adapter not yet written
    deferring: bool = False  # a checkpoint was deferred and has not been taken since


@dataclass(frozen=True)
class PreparedData:
    hp: Hyperparameters
    examples: list
    validation: list


class JobExecutor(JobWrites):
    def __init__(self, spec: WorkerSpec, shared: tuple[object, ...], arena=None):
        from transformers import AutoConfig, AutoTokenizer

        self.spec = spec
        self.config = spec.config
        self.fused: dict[str, torch.Tensor] = shared[0]  # type: ignore[assignment]
        torch.set_num_threads(max(1, spec.torch_threads))
        self.hf_config = AutoConfig.from_pretrained(spec.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        probe = build_model(self.hf_config, self.fused)
        self.num_layers = self.hf_config.num_hidden_layers
        self.base_param_bytes = sum(p.numel() * p.element_size() for p in probe.parameters())
        self.private_base_bytes = private_bytes(probe)
        del probe
        self.store = open_store(self.config)
        self.artifacts = artifacts_of(self.config)
        self.owner = self.config.instance_id or "local"
        self.fleet = FleetMember(self.store, self.owner, spec.server_url,
                                 spec.served_model_name or spec.model_path, self.config.lease_s)
        self.publisher = AdapterPublisher(spec.server_url, spec.api_key, spec.admin_api_key)
        self.arena = arena
        self.running: dict[str, RunningJob] = {}
        self._tenant_units: dict[str, int] = {}  # slot work served per tenant with live jobs
        # One thread: jobs are prepared one after the other, never competing with the loop
        # for more than one core's worth of Python.
        self._prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="harli-prepare")
        self._prepare_tokenizer = None
        # Publishing calls the server over HTTP; one thread keeps them in order and keeps
        # AdapterPublisher's retry state single-threaded.
        self._publish_pool = ThreadPoolExecutor(1, thread_name_prefix="harli-publish")
        self.writer = SnapshotWriter()
        self._profile: ProfileWorkload | None = None
        self._last_poll = 0.0
        self._last_flush = 0.0
        self._storage_retry_at = 0.0
        self._pending_status: list[tuple[str, str, dict]] = []
        self._recovered = False
        self._recover()
        # Finished adapters are served again after a restart by the server itself (its
        # adapter catalog, harli_sgl/sglang/tokenizer_manager.py), not from here.

    # -- Executor protocol ---------------------------------------------------------------

    def set_free_compute(self, units_per_s: float | None) -> None:
        """The scheduler's estimate of this instance's free compute (FreeCompute)."""
        self.fleet.set_free_compute(units_per_s)

    def has_work(self) -> bool:
        return self._pick() is not None

    def state(self) -> WorkerState:
        job = self._pick()
        if job is None:
            return WorkerState(has_work=False)
        t = job.trainer
        pieces = tuple((p.kind.cost_kind, p.units) for p in t.upcoming_pieces(NEXT_PIECES))
        wanted = self.arena.wanted_bytes() if self.arena is not None else 0
        return WorkerState(has_work=True, job_id=job.job_id, micro_batch_tokens=t.min_piece_units,
                           min_piece_units=t.min_piece_units, next_pieces=pieces,
                           wanted_bytes=wanted)

    def run_slot(self, grant: SlotGrant) -> SlotReport:
        start = time.perf_counter()
        deadline = start + grant.budget_ms / 1000.0
        if grant.synthetic:
            return self._run_synthetic(grant, start, deadline)
        job = self._pick()
        if job is None:
            return SlotReport(grant.slot_id, NO_SLOT, 0, 0.0)
        try:
            r = job.trainer.run(self._budget(job, grant.budget_units), deadline)
        except TrainingDiverged as e:
            logger.warning("job %s: %s", job.job_id, e)
            self._fail(job, "training_diverged", f"training failed: {e}")
            return SlotReport(grant.slot_id, NO_SLOT, 0, (time.perf_counter() - start) * 1e3,
                              job_id=job.job_id)
        except Exception as e:  # a fault in one job fails that job, never the worker
            logger.exception("job %s failed while training", job.job_id)
            self._fail(job, "training_error", f"training failed: {type(e).__name__}: {e}")
            return SlotReport(grant.slot_id, NO_SLOT, 0, (time.perf_counter() - start) * 1e3,
                              job_id=job.job_id)
        job.served_units += r.units
        self._tenant_units[job.tenant] = self._tenant_units.get(job.tenant, 0) + r.units
        if r.trained_tokens and self.arena is not None:
            self.arena.micro_batch_done()
        return SlotReport(grant.slot_id, r.work, r.tokens, (time.perf_counter() - start) * 1e3,
                          trained_tokens=r.trained_tokens, job_id=job.job_id)

    def next_piece_units(self, synthetic: bool = False) -> int:
        """Units of the piece the next slot would start with (0: nothing to run).

        The concurrent arrangement runs one piece at a time with exactly this
        budget, so the worker reaches a piece boundary, where it reads its inbox,
        after every piece.
        """
        if synthetic:
            return self._profile_workload().next_piece_units()
        job = self._pick()
        return job.trainer.min_piece_units if job is not None else 0

    def _profile_workload(self) -> ProfileWorkload:
        if self._profile is None:
            self._profile = ProfileWorkload(self.hf_config, self.fused, self.tokenizer,
                                            self.config.lora_target_modules)
        return self._profile

    def _run_synthetic(self, grant: SlotGrant, start: float, deadline: float) -> SlotReport:
        r = self._profile_workload().run(grant.budget_units, deadline)
        # Synthetic tokens are not finetune throughput: trained_tokens stays 0.
        return SlotReport(grant.slot_id, r.work, 0, (time.perf_counter() - start) * 1e3)

    def tick(self) -> None:
        """Between slots: record finished writes and start due ones, flush store writes,
        publish adapters, notice cancels, admit jobs."""
        for job in list(self.running.values()):
            if job.preparing is not None and job.preparing.done():
                self._finish_start(job)
        for job in list(self.running.values()):
            self._collect_write(job)
            if job.trainer is not None and job.trainer.checkpoint_due:
                self._start_checkpoint(job)
            trained = job.finished is not None or (job.trainer is not None and job.trainer.done)
            if trained and job.write is None and not self._storage_full_now():
                self._save_adapter(job)
        if self._storage_full_now():
            return  # the disk is full: store work waits (training goes on in slots)
        try:
            self._store_tick()
        except StorageFullError as e:
            self._storage_full(e)

    def _store_tick(self) -> None:
        while self._pending_status:
            job_id, status, kwargs = self._pending_status[0]
            try:
                self.store.set_status(job_id, status, **kwargs)
            except InvalidTransitionError:
                pass
            self._pending_status.pop(0)
        if not self._recovered:
            self._recover()
        # Store writes run while decode does: batch them (once a second, and always
        # before a status change, which flushes on its own).
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()
        for job in list(self.running.values()):
            if job.adapter_path is not None:
                self._publish(job)
        if self.fleet.beat_due():
            room = max(0, self.config.max_running_jobs - len(self.running))
            for job_id in self.fleet.beat(list(self.running), room):
                if job_id in self.running:
                    self._lost(self.running[job_id])
        now = time.monotonic()
        if now - self._last_poll < POLL_INTERVAL_S:
            return
        self._last_poll = now
        for job in list(self.running.values()):
            if self.store.is_cancelled(job.job_id):
                logger.info("job %s was cancelled", job.job_id)
                self._drop(job)
        while self.fleet.may_claim(len(self.running),
                                   self.config.max_running_jobs - len(self.running)):
            claimed = self.store.claim_next_job(self.owner, self.config.lease_s)
            self.fleet.claimed(claimed)
            if claimed is None:
                break
            self._start(claimed)
            # The others decide their next claim from this row: show them the new load now.
            self.fleet.publish(len(self.running), self.config.max_running_jobs - len(self.running))

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

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)
        self._publish_pool.shutdown(wait=False, cancel_futures=True)
        # A checkpoint being written is worth recording: a restart resumes from it.
        if not self.writer.wait(CLOSE_WRITE_WAIT_S):
            logger.warning("stopping with checkpoint or adapter writes still in flight")
        for job in list(self.running.values()):
            self._collect_write(job)
        self.writer.close()
        if self._profile is not None:
            self._profile.close()
        self.flush()
        for job in list(self.running.values()):
            self._drop(job)
        try:
            # A clean stop hands this instance's jobs back at once (another instance, or
            # this one's next worker, resumes them from their checkpoints) instead of
            # after their leases expire.
            self.store.recover_running_jobs(self.owner)
            self.store.remove_instance(self.owner)
        except StoreError as e:
            logger.warning("could not hand back running jobs on shutdown: %s", e)
        self.store.close()

    # -- job lifecycle -------------------------------------------------------------------

    def _pick(self) -> RunningJob | None:
        live: dict[str, list[RunningJob]] = {}
        for r in self._live():
            live.setdefault(r.tenant, []).append(r)
        # A tenant without live jobs is forgotten, and one that (re)appears starts level with
        # the least-served tenant: fair shares from now on, no catching up on the past.
        for gone in self._tenant_units.keys() - live.keys():
            del self._tenant_units[gone]
        floor = min(self._tenant_units.values(), default=0)
        for tenant in live:
            self._tenant_units.setdefault(tenant, floor)
        if not live:
            return None
        holding = [r for jobs in live.values() for r in jobs if r.trainer.holds_activations]
        if holding:  # finish its micro-batch before anyone starts another one
            return holding[0]
        tenant = min(live, key=lambda t: (self._tenant_units[t], t))
        return min(live[tenant], key=lambda r: r.served_units)

    def _live(self) -> list[RunningJob]:
        return [r for r in self.running.values() if r.trainer is not None and not r.trainer.done]

    def _budget(self, job: RunningJob, units: int) -> int:
        """A job served ahead of its share (its tenant ahead of another tenant, or it ahead of
        its tenant's other jobs) runs only to the end of the micro-batch it holds."""
        live = self._live()
        tenant_floor = min(self._tenant_units.get(r.tenant, 0) for r in live)
        job_floor = min(r.served_units for r in live if r.tenant == job.tenant)
        if self._tenant_units.get(job.tenant, 0) > tenant_floor or job.served_units > job_floor:
            return min(units, job.trainer.units_to_release)
        return units

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
        tokenizer = self._prepare_tokenizer
        hp = Hyperparameters.from_job(job)
        text = self.store.read_file(job["training_file"]).decode("utf-8")
        examples = load_examples(text, tokenizer, MAX_SEQ_LEN)
        del text
        valid = []
        if job.get("validation_file"):
            valid = load_examples(self.store.read_file(job["validation_file"]).decode("utf-8"),
                                  tokenizer, MAX_SEQ_LEN)
        malloc.trim()  # the tokenizer's transient per-token memory (see worker/malloc.py)
        return PreparedData(hp, examples, valid)

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
            micro_batch_size=min(hp.batch_size, self.config.micro_batch_size),
            learning_rate=hp.learning_rate, lora_r=hp.lora.r, lora_alpha=hp.lora.alpha,
            lora_dropout=hp.lora.dropout, target_modules=tuple(hp.lora.target_modules),
            seed=int(job["seed"]), max_seq_len=MAX_SEQ_LEN,
            checkpoint_every_steps=self.config.checkpoint_every_steps,
        )
        kwargs = dict(on_event=lambda kind, msg, data: self._on_event(entry, kind, msg, data),
                      checkpoint_dir=lambda step: self._artifact_dir("checkpoints", job_id,
                                                                     f"step-{step:06d}"),
                      saved_tensors_hooks=self.arena.hooks() if self.arena is not None else None,
                      validation_examples=valid)
        base = build_model(self.hf_config, self.fused)
        try:
            ckpt = self.store.latest_checkpoint(job_id)
            if ckpt is not None and os.path.isdir(ckpt["path"]):
                entry.trainer = JobTrainer.resume(ckpt["path"], base, self.tokenizer, examples, cfg,
                                                  **kwargs)
                self._event(entry, "info", f"resumed from the checkpoint at step {ckpt['step_number']}",
                            {"step": ckpt["step_number"]})
            else:
                entry.trainer = JobTrainer(base, self.tokenizer, examples, cfg, **kwargs)
        except (ValueError, RuntimeError) as e:
            self._fail(entry, "invalid_hyperparameters", f"cannot start training: {e}")
            return
        p = entry.trainer.progress
        message = (f"training {len(examples)} examples for {p.total_steps} steps "
                   f"({cfg.n_epochs} epochs, batch size {cfg.batch_size})")
        logger.info("job %s: %s", job_id, message)
        self._event(entry, "info", message, {"examples": len(examples), "total_steps": p.total_steps})
        self.flush()

    def _on_event(self, job: RunningJob, kind: str, message: str, data: dict) -> None:
        if kind in ("step", "eval"):
            self._event(job, "info", message, data, "metrics")
            return
        # Milestones (epochs, checkpoints, the end of training) reach the server log too:
        # an operator reads logs first. Steps stay in the job's events only.
        logger.info("job %s: %s", job.job_id, message)
        if kind == "checkpoint":
            job.events.append(("__checkpoint__", message, data, ""))
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
            if job.events:
                return  # not stored yet (the disk is full): publish on a later tick
            job.publishing = self._publish_pool.submit(self._publish_call, job.name,
                                                       job.adapter_path)
        if not job.publishing.done():
            return  # the loop goes on; a later tick sees the answer
        ok, why = job.publishing.result()
        job.publishing = None
        if ok:
            try:
                self.store.set_status(job.job_id, "succeeded", fine_tuned_model=job.name,
                                      owner=self.owner)
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
        job.events.append((level, message, data, type))

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._storage_full_now():
            return
        for job in list(self.running.values()):
            events, job.events = job.events, []
            for i, (level, message, data, type_) in enumerate(events):
                try:
                    if level == "__checkpoint__":
                        metrics = {k: data[k] for k in ("train_loss", "valid_loss")
                                   if data[k] is not None}
                        self.store.add_checkpoint(job.job_id, data["step"], data["path"], metrics,
                                                  owner=self.owner)
                    elif level == "__progress__":
                        self.store.update_progress(job.job_id, **data, owner=self.owner)
                    else:
                        self.store.add_event(job.job_id, level, message, data, type_)
                        if type_ == "metrics":
                            self.store.update_progress(job.job_id, data["trained_tokens"],
                                                       data["step"], data["total_steps"],
                                                       owner=self.owner)
                except LeaseLostError:
                    self._lost(job)
                    break
                except StorageFullError as e:
                    job.events[:0] = events[i:]  # kept, in order, for the next flush
                    self._storage_full(e)
                    return
                except StoreError as e:
                    logger.warning("job %s: could not record %r: %s", job.job_id, message, e)

    def _artifact_dir(self, kind: str, *parts: str) -> str:
        path = self.artifacts.path(kind, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _lost(self, job: RunningJob) -> None:
        """This instance no longer holds the job's lease: stop it, write nothing more.

        It stalled past its lease and another instance took the job over (or will),
        resuming from the last checkpoint; going on here would train it twice.
        """
        logger.warning("job %s: this instance (%s) lost its lease; another instance resumes it",
                       job.job_id, self.owner)
        job.events.clear()
        job.adapter_path = None
        self._drop(job)
