"""The worker's job executor: which running job each granted slot trains, and the loop's ticks.

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

The job lifecycle (claim, prepare, start or resume, publish, fail, hand back)
is :mod:`harli_sgl.worker.job_lifecycle`, mixed into :class:`JobExecutor`,
which sets the state it declares (the store, the running jobs, the pools);
checkpoint and adapter writes are a component of their own
(:class:`~harli_sgl.worker.job_writes.JobWrites`), given what it calls.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.message.from_worker import SlotReport, WorkerState
from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.core.shared_weights import build_model, private_bytes, shm_segments
from harli_sgl.core.trainer.job_trainer import TrainingDiverged
from harli_sgl.jobs.store import InvalidTransitionError, StorageFullError, StoreError
from harli_sgl.jobs.stores import artifacts_of, open_store
from harli_sgl.worker.fleet import FleetMember
from harli_sgl.worker.job_lifecycle import JobLifecycle
from harli_sgl.worker.job_writes import JobWrites
from harli_sgl.worker.profile_workload import ProfileWorkload
from harli_sgl.worker.publisher import AdapterPublisher
from harli_sgl.worker.running_job import RunningJob
from harli_sgl.worker.spec import WorkerSpec
from harli_sgl.worker.writer import SnapshotWriter

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
NEXT_PIECES = 24  # pieces announced to the scheduler for slot sizing
FLUSH_EVERY_S = 1.0
CLOSE_WRITE_WAIT_S = 30.0  # how long a stopping worker waits for writes in flight


class JobExecutor(JobLifecycle):
    def __init__(self, spec: WorkerSpec, serving_weights: dict[str, torch.Tensor], arena=None):
        from transformers import AutoConfig, AutoTokenizer

        self.spec = spec
        self.config = spec.config
        self.fused = serving_weights
        torch.set_num_threads(max(1, spec.torch_threads))
        self.hf_config = AutoConfig.from_pretrained(spec.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        probe = build_model(self.hf_config, self.fused)
        self.num_layers = self.hf_config.num_hidden_layers
        self.base_param_bytes = sum(p.numel() * p.element_size() for p in probe.parameters())
        self.private_base_bytes = private_bytes(probe)
        self.base_weight_segments = shm_segments(p for p in probe.parameters() if not p.requires_grad)
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
        self.writes = JobWrites(self.writer, artifact_dir=self._artifact_dir, event=self._event,
                                fail=self._fail, storage_full=self._storage_full)
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
            self.writes.collect(job)
            if job.trainer is not None and job.trainer.checkpoint_due:
                self.writes.start_checkpoint(job)
            trained = job.finished is not None or (job.trainer is not None and job.trainer.done)
            if trained and job.write is None and not self._storage_full_now():
                self.writes.save_adapter(job)
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
        self._preempt_for_fair_share()
        while self.fleet.may_claim(len(self.running),
                                   self.config.max_running_jobs - len(self.running)):
            claimed = self.store.claim_next_job(self.owner, self.config.lease_s)
            self.fleet.claimed(claimed)
            if claimed is None:
                break
            self._start(claimed)
            # The others decide their next claim from this row: show them the new load now.
            self.fleet.publish(len(self.running), self.config.max_running_jobs - len(self.running))

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)
        self._publish_pool.shutdown(wait=False, cancel_futures=True)
        # A checkpoint being written is worth recording: a restart resumes from it.
        if not self.writer.wait(CLOSE_WRITE_WAIT_S):
            logger.warning("stopping with checkpoint or adapter writes still in flight")
        for job in list(self.running.values()):
            self.writes.collect(job)
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

    # -- which job a slot trains ----------------------------------------------------------

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
