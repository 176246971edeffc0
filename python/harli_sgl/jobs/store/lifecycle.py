"""Fine-tuning jobs: creation, lookups, and the status lifecycle with its events.

Every status change reads the job's row under a row lock, checks the
transition against :data:`~harli_sgl.jobs.store.base.TRANSITIONS`, writes, and
logs an event, all in one transaction. A job that leaves ``running`` gives up
its lease (both lease columns are cleared). A job that succeeds takes the next
``succeeded_seq``, handed out in commit order, and on PostgreSQL notifies
``harli_adapters`` in the same transaction, so instances learn of a new adapter
exactly when it becomes visible (see :mod:`.fleet`).

A worker passes ``owner=`` to the writes it makes on a running job (progress,
the final status); they then raise :class:`LeaseLostError` and change nothing
unless the job is still running under that owner's lease. That guard, not the
lease timer, is what keeps an instance that stalled past its lease from
finishing a job another instance has taken over.

A job belongs to its tenant, and so do its events and checkpoints; lookups
that name a ``tenant`` see only its jobs. Creating one more job than the
tenant's ``max_queued_jobs`` allows waiting is refused (:mod:`.quota`).
"""

from __future__ import annotations

from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.db.base import SUCCEEDED_ORDER, Tx
from harli_sgl.jobs.objects import job_object
from harli_sgl.jobs.schema import JOB_STATUSES, TERMINAL_STATUSES
from harli_sgl.jobs.store.base import (DEFAULT_LEASE_S, LOCAL_OWNER, TRANSITIONS, StoreBase, dumps,
                                       now_s, owned)
from harli_sgl.jobs.store_errors import InvalidTransitionError, NotFoundError
from harli_sgl.jobs.store.files import check_files_exist
from harli_sgl.jobs.store.quota import check_queued_jobs
from harli_sgl.jobs.tenants import DEFAULT_TENANT

ADAPTERS_CHANNEL = "harli_adapters"


class JobRecords(StoreBase):
    def create_job(self, model: str, training_file: str, validation_file: str | None,
                   suffix: str | None, seed: int, hyperparameters: dict[str, Any],
                   lora: dict[str, Any], metadata: dict[str, str] | None,
                   tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """A new job of ``tenant`` in ``validating_files``; its files must be the tenant's
        (checked atomically), and its queue must have room (``max_queued_jobs``)."""
        job_id = ids.new_id(ids.JOB)
        with self._db.write() as tx:
            check_queued_jobs(tx, tenant, self.default_limits)
            check_files_exist(tx, {"training_file": training_file,
                                   "validation_file": validation_file}, tenant)
            tx.execute(
                "INSERT INTO jobs (id, model, training_file, validation_file, suffix, seed, "
                "hyperparameters, lora, metadata, status, created_at, tenant) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?, ?)",
                (job_id, model, training_file, validation_file, ids.check_suffix(suffix), seed,
                 dumps(hyperparameters), dumps(lora), dumps(metadata), now_s(), tenant))
            self._event(tx, job_id, "info", f"Created fine-tuning job: {job_id}")
        return self.get_job(job_id)  # type: ignore[return-value]

    def get_job(self, job_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The job, if it exists (and, given ``tenant``, belongs to that tenant)."""
        if not ids.is_valid_id(job_id, ids.JOB):
            return None
        where, args = owned("id = ?", [job_id], tenant)
        row = self._one(f"SELECT * FROM jobs WHERE {where}", tuple(args))
        return job_object(row) if row else None

    def jobs_with_status(self, status: str) -> list[dict[str, Any]]:
        """All jobs in ``status``, oldest first."""
        return [job_object(r) for r in self._all("SELECT * FROM jobs WHERE status = ? ORDER BY seq",
                                                 (status,))]

    def job_status_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Number of jobs (of ``tenant``) in each status (every status present, zeros included)."""
        where, args = owned("TRUE", [], tenant)
        rows = self._all(f"SELECT status, COUNT(*) AS n FROM jobs WHERE {where} GROUP BY status",
                         tuple(args))
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts.update({r["status"]: int(r["n"]) for r in rows})
        return counts

    def list_jobs(self, after: str | None = None, limit: int = 20,
                  tenant: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Jobs (of ``tenant``) newest first; ``after`` is the id of the last job of the previous page."""
        where, args = owned("TRUE", [], tenant)
        rows, has_more = self._page("jobs", "job", where, args, after, limit)
        return [job_object(r) for r in rows], has_more

    def set_status(self, job_id: str, status: str, *, error: dict[str, Any] | None = None,
                   fine_tuned_model: str | None = None, trained_tokens: int | None = None,
                   owner: str | None = None,
                   result_files: list[str] | None = None) -> dict[str, Any]:
        """Move a job to ``status`` if the lifecycle allows it, stamping times and logging an event.

        ``error`` ({code, message, param}) is only for ``failed``; ``result_files`` (file
        ids, the job's ``fine-tune-results``) only for ``succeeded``. A job that succeeds
        without an explicit ``fine_tuned_model`` gets :func:`ids.fine_tuned_model_name`.
        ``owner``: moving a job out of ``running``, the caller's lease must still hold
        (else :class:`LeaseLostError`); moving it into ``running``, who holds the lease
        (default :data:`LOCAL_OWNER`; workers claim with :meth:`claim_next_job` instead).
        """
        if error is not None:
            if status != "failed":
                raise ValueError(f"an error can only be recorded with status 'failed', not {status!r}")
            error = _normalise_error(error)
        if status not in TRANSITIONS:
            raise ValueError(f"unknown job status {status!r}; expected one of {list(TRANSITIONS)}")
        with self._db.write() as tx:
            row = self._job_row(tx, job_id, tx.lock())
            if owner is not None and status != "running":
                self._check_lease(row, owner)
            self._check_transition(row, status)
            now = now_s()
            sets: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None}
            if status == "running":
                sets["attempts"] = row["attempts"] + 1
                sets["started_at"] = row["started_at"] or now
                sets["lease_owner"] = owner or LOCAL_OWNER
                sets["lease_expires_at"] = tx.now() + DEFAULT_LEASE_S
            if status in TERMINAL_STATUSES:
                sets["finished_at"] = now
            if status == "failed":
                sets["error"] = dumps(error)
            if status == "succeeded":
                sets["fine_tuned_model"] = (fine_tuned_model or ids.fine_tuned_model_name(
                    job_id, row["suffix"], row["model"], row["tenant"]))
                sets["succeeded_seq"] = _next_succeeded_seq(tx)
                tx.notify(ADAPTERS_CHANNEL, sets["fine_tuned_model"])
            if trained_tokens is not None:
                sets["trained_tokens"] = int(trained_tokens)
            if result_files is not None:
                sets["result_files"] = dumps(list(result_files))
            tx.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                       (*sets.values(), job_id))
            self._status_event(tx, row, status, error, sets.get("fine_tuned_model"),
                               sets["lease_owner"])
        return self.get_job(job_id)  # type: ignore[return-value]

    def request_cancel(self, job_id: str, tenant: str | None = None) -> dict[str, Any]:
        """Cancel a job that has not finished; a finished one raises :class:`InvalidTransitionError`."""
        with self._db.write() as tx:
            row = self._job_row(tx, job_id, tx.lock())
            if tenant is not None and row["tenant"] != tenant:
                raise NotFoundError(f"No such fine-tuning job: {job_id!r}")
            if row["status"] in TERMINAL_STATUSES:
                raise InvalidTransitionError(
                    f"Job {job_id} has already {_finished_verb(row['status'])} "
                    f"(status '{row['status']}'); only unfinished jobs can be cancelled")
            tx.execute("UPDATE jobs SET status = 'cancelled', finished_at = ?, lease_owner = NULL, "
                       "lease_expires_at = NULL WHERE id = ?", (now_s(), job_id))
            self._status_event(tx, row, "cancelled", None, None)
        return self.get_job(job_id)  # type: ignore[return-value]

    def is_cancelled(self, job_id: str) -> bool:
        row = self._one("SELECT status FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")
        return row["status"] == "cancelled"

    def update_progress(self, job_id: str, trained_tokens: int, step: int,
                        total_steps: int | None, *, owner: str | None = None,
                        estimated_finish: int | None = None) -> bool:
        """Record progress of a running job. False (and no change) if it is no longer running.

        ``estimated_finish`` (unix seconds, None: no rate measured yet) replaces the last one.

        With ``owner``, a job not running under that owner's lease raises
        :class:`LeaseLostError` instead.
        """
        with self._db.write() as tx:
            row = self._job_row(tx, job_id, tx.lock())
            if owner is not None:
                self._check_lease(row, owner)
            elif row["status"] != "running":
                return False
            tx.execute("UPDATE jobs SET trained_tokens = ?, step = ?, total_steps = ?, "
                       "estimated_finish = ? WHERE id = ?",
                       (int(trained_tokens), int(step),
                        None if total_steps is None else int(total_steps),
                        None if estimated_finish is None else int(estimated_finish), job_id))
            return True


def _next_succeeded_seq(tx: Tx) -> int:
    # Taking turns until commit makes the numbers visible in order: an instance that has
    # seen n can never later find an n - 1 it missed (see db.base.Tx.serialize).
    tx.serialize(SUCCEEDED_ORDER)
    return int(tx.one("SELECT COALESCE(MAX(succeeded_seq), 0) + 1 AS n FROM jobs")["n"])  # type: ignore[index]


def _normalise_error(error: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        raise ValueError(f"a job error needs string 'code' and 'message', got {error!r}")
    param = error.get("param")
    return {"code": error["code"], "message": error["message"],
            "param": None if param is None else str(param)}


def _finished_verb(status: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}[status]
