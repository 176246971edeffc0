"""Leases: which instance runs a job, until when, and what happens when it stops renewing.

A worker takes a job with :meth:`JobLeases.claim_next_job`, which moves the
next queued job to ``running`` under a lease: ``lease_owner`` (the instance)
and ``lease_expires_at`` (the database's clock, so instances whose clocks
disagree still agree on when a lease ends). Previously started jobs come first,
so a job whose run was interrupted does not go to the back of the line; then
oldest first. On PostgreSQL the claim reads with ``FOR UPDATE SKIP LOCKED``:
instances polling at the same moment each lock a different queued row, never
the same one, and none waits for another.

Between tenants the claim is fair: of the queued jobs it takes one of the
tenant with the fewest jobs running, so a tenant that queued ten jobs does not
fill every running place before another tenant's one job gets any; a tenant
already at its ``max_running_jobs`` is passed over (its jobs stay queued). The
claim then locks that tenant's row and counts again, so two instances claiming
at once cannot both take its last place.

Fairness holds for places already taken too. A tenant whose jobs took every
place while nobody else waited keeps them only until another tenant queues a
job: :meth:`JobLeases.preempt_for_fair_share` re-queues one of the first
tenant's jobs when some tenant waits (a queued job, under its own running limit)
with at least two running jobs fewer, so moving one place makes the shares
closer and never reverses them (3 and 1 become 2 and 2; 2 and 1 stay). The
worker asks it at a checkpoint boundary, only while it has no free place
(a free place goes to the waiting tenant by the claim order anyway), so the
job resumes from that checkpoint, like a job whose worker restarted, and
redoes at most the few steps it trained since. Its ``attempts`` is not increased by that (it counts crashes).

While it trains, the worker calls :meth:`JobLeases.renew_lease` well within
the lease; False means the job is gone from it (expired and re-queued,
cancelled) and it must stop. Any instance may call
:meth:`JobLeases.requeue_expired_leases` periodically: a job whose owner
stopped renewing (crashed, partitioned, stalled) goes back to ``queued`` and
resumes elsewhere from its latest checkpoint. A stalled owner that wakes up
cannot undo that: its guarded writes raise ``LeaseLostError`` (see
:mod:`.lifecycle`). A restarted worker calls
:meth:`JobLeases.recover_running_jobs` for its own jobs at once rather than
waiting for their leases to run out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harli_sgl.jobs.store.base import DEFAULT_LEASE_S, LOCAL_OWNER, now_s
from harli_sgl.jobs.store.lifecycle import JobRecords
from harli_sgl.jobs.store.quota import (default_or_unlimited, jobs_in, running_limit_sql,
                                        tenant_limits)

_RUNNING_OF_ITS_TENANT = "(SELECT COUNT(*) FROM jobs r WHERE r.tenant = j.tenant AND r.status = 'running')"


class Lease(NamedTuple):
    owner: str | None
    expires_at: float | None  # database clock; None with owner None: not leased


class JobLeases(JobRecords):
    def claim_next_job(self, owner: str = LOCAL_OWNER,
                       lease_s: float = DEFAULT_LEASE_S) -> dict[str, Any] | None:
        """Atomically move the next queued job to ``running`` under ``owner``'s lease; None if none."""
        # A plain read first: it takes no lock, so a worker polling an empty queue never
        # holds the write lock (SQLite) or a connection in a transaction (PostgreSQL).
        if self._one("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1") is None:
            return None
        default_running = default_or_unlimited(self.default_limits.max_running_jobs)
        with self._db.write() as tx:
            # The tenant with the fewest running first (a job preempted for another tenant
            # must not take its place straight back), then resumed jobs, then the oldest.
            row = tx.one(f"SELECT * FROM jobs j WHERE status = 'queued' "
                         f"AND {_RUNNING_OF_ITS_TENANT} < {running_limit_sql()} "
                         f"ORDER BY {_RUNNING_OF_ITS_TENANT}, started_at IS NULL, seq "
                         f"LIMIT 1{tx.lock(skip_locked=True)}", (default_running,))
            if row is None:
                return None
            limit = tenant_limits(tx, row["tenant"], self.default_limits, lock=True).max_running_jobs
            if limit is not None and jobs_in(tx, row["tenant"], ("running",)) >= limit:
                return None  # another instance took the tenant's last place meanwhile
            tx.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                       "started_at = COALESCE(started_at, ?), lease_owner = ?, "
                       "lease_expires_at = ? WHERE id = ?",
                       (now_s(), owner, tx.now() + lease_s, row["id"]))
            self._status_event(tx, row, "running", None, None, owner)
        return self.get_job(row["id"])

    def preempt_for_fair_share(self, job_id: str, owner: str) -> str | None:
        """Re-queue ``owner``'s running job ``job_id`` if another tenant waits with at least two
        running jobs fewer than the job's tenant; the tenant it makes room for, else None."""
        default_running = default_or_unlimited(self.default_limits.max_running_jobs)
        # A plain read first: nearly always nobody else waits, and no write lock is taken.
        if self._one("SELECT 1 FROM jobs j, jobs mine WHERE mine.id = ? AND j.status = 'queued' "
                     "AND j.tenant <> mine.tenant LIMIT 1", (job_id,)) is None:
            return None
        with self._db.write() as tx:
            row = self._job_row(tx, job_id, tx.lock())
            if row["status"] != "running" or row["lease_owner"] != owner:
                return None
            # The job's tenant's row, locked: two of its jobs checked at once count in turn.
            tenant_limits(tx, row["tenant"], self.default_limits, lock=True)
            waiting = tx.one(f"SELECT j.tenant, {_RUNNING_OF_ITS_TENANT} AS running FROM jobs j "
                             f"WHERE j.status = 'queued' AND j.tenant <> ? "
                             f"AND {_RUNNING_OF_ITS_TENANT} < {running_limit_sql()} "
                             f"ORDER BY running, j.seq LIMIT 1", (row["tenant"], default_running))
            if waiting is None or int(waiting["running"]) + 2 > jobs_in(tx, row["tenant"], ("running",)):
                return None
            self._requeue(tx, row, f"Preempted at a checkpoint so that another tenant's job gets "
                          f"its fair share of running places; the job is queued again and "
                          f"resumes from its latest checkpoint")
            # A preemption is no crash: attempts (which fail a job past MAX_ATTEMPTS) stays.
            tx.execute("UPDATE jobs SET attempts = attempts - 1 WHERE id = ? AND attempts > 0",
                       (job_id,))
            return waiting["tenant"]

    def renew_lease(self, job_id: str, owner: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend ``owner``'s lease by ``lease_s`` from now; False if it no longer holds one."""
        with self._db.write() as tx:
            self._job_row(tx, job_id)
            return tx.execute("UPDATE jobs SET lease_expires_at = ? "
                              "WHERE id = ? AND status = 'running' AND lease_owner = ?",
                              (tx.now() + lease_s, job_id, owner)) == 1

    def lease(self, job_id: str) -> Lease:
        """Who holds the job's lease and until when (both None unless it is running)."""
        with self._db.read() as tx:
            row = self._job_row(tx, job_id)
        return Lease(row["lease_owner"], row["lease_expires_at"])

    def requeue_expired_leases(self) -> list[dict[str, Any]]:
        """Re-queue running jobs whose lease ran out; return them (now ``queued``), oldest first."""
        expired = "SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < ? ORDER BY seq"
        with self._db.read() as tx:
            if not tx.all(expired + " LIMIT 1", (tx.now(),)):
                return []  # the usual answer, without a write transaction
        with self._db.write() as tx:
            # SKIP LOCKED: a row locked now is being renewed, ended or re-queued by someone else.
            rows = tx.all(expired + tx.lock(skip_locked=True), (tx.now(),))
            for row in rows:
                self._requeue(tx, row, f"The lease of {row['lease_owner']!r} on this job expired "
                              "(it stopped renewing it); the job is queued again and resumes "
                              "from its latest checkpoint")
        return [self.get_job(r["id"]) for r in rows]

    def recover_running_jobs(self, owner: str = LOCAL_OWNER) -> list[dict[str, Any]]:
        """Re-queue the jobs ``owner`` left ``running`` (its worker died); return them, oldest first.

        Call once when a worker starts, before :meth:`claim_next_job`; the returned jobs
        are ``queued`` again and claim_next_job hands them out first. Resume each from
        ``latest_checkpoint``. Running jobs without an owner (left by a store from
        before leases) count as the caller's; other instances' jobs are left alone.
        """
        with self._db.write() as tx:
            rows = tx.all("SELECT * FROM jobs WHERE status = 'running' "
                          f"AND (lease_owner = ? OR lease_owner IS NULL) ORDER BY seq{tx.lock()}",
                          (owner,))
            for row in rows:
                self._requeue(tx, row, "The fine-tuning worker restarted; the job is queued again "
                              "and resumes from its latest checkpoint")
        return [self.get_job(r["id"]) for r in rows]
