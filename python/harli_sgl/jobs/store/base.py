"""What every part of the job store shares: the database, row helpers, and how changes are logged.

The parts of :class:`~harli_sgl.jobs.store.job_store.JobStore` (files, job
records, leases, the job log, the fleet) are mixins over this base, so each
reads as the logic of its own objects while all of them write through the same
transactions. A helper that takes a ``tx`` runs inside the caller's transaction;
one without opens its own read. Nothing here may call a public method from
inside a transaction: on SQLite that would nest transactions on one connection.
"""

from __future__ import annotations

import json
import time
from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.db.base import Database, Row, Tx
from harli_sgl.jobs.store_errors import InvalidTransitionError, LeaseLostError, NotFoundError
from harli_sgl.jobs.tenants import Limits

TRANSITIONS: dict[str, frozenset[str]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "queued"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

# The lease owner of a single instance, and how long a lease lasts unless renewed.
LOCAL_OWNER = "local"
DEFAULT_LEASE_S = 30.0


def now_s() -> int:
    """API timestamps: whole seconds of this host's clock (leases use the database's)."""
    return int(time.time())


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


def owned(where: str, args: list[Any], tenant: str | None) -> tuple[str, list[Any]]:
    """``where`` narrowed to ``tenant``'s rows; unchanged for None (the worker, which sees all)."""
    if tenant is None:
        return where, args
    return f"{where} AND tenant = ?", [*args, tenant]


class StoreBase:
    _db: Database
    default_limits: Limits  # every tenant's quotas unless an admin set its own

    def _one(self, sql: str, args: tuple = ()) -> Row | None:
        with self._db.read() as tx:
            return tx.one(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[Row]:
        with self._db.read() as tx:
            return tx.all(sql, args)

    def _page(self, table: str, kind: str, where: str, args: list[Any], after: str | None,
              limit: int | None, ascending: bool = False) -> tuple[list[Row], bool]:
        """Rows of ``table`` matching ``where`` in ``seq`` order, strictly past the ``after`` row."""
        with self._db.read(snapshot=True) as tx:  # one snapshot for the cursor lookup and the page
            if after is not None:
                row = tx.one(f"SELECT seq FROM {table} WHERE id = ? AND {where}", (after, *args))
                if row is None:
                    raise NotFoundError(f"after: no such {kind} {after!r} in this list", "after")
                where = f"{where} AND seq {'>' if ascending else '<'} ?"
                args = [*args, row["seq"]]
            sql = f"SELECT * FROM {table} WHERE {where} ORDER BY seq {'ASC' if ascending else 'DESC'}"
            if limit is not None:
                sql += f" LIMIT {int(limit) + 1}"
            rows = tx.all(sql, args)
        if limit is not None and len(rows) > limit:
            return rows[:limit], True
        return rows, False

    def _require_job(self, job_id: str, tenant: str | None = None) -> None:
        where, args = owned("id = ?", [job_id], tenant)
        if not ids.is_valid_id(job_id, ids.JOB) or self._one(
                f"SELECT 1 FROM jobs WHERE {where}", tuple(args)) is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")

    @staticmethod
    def _job_row(tx: Tx, job_id: str, lock: str = "") -> Row:
        """The job's row, locked by ``lock`` (a :meth:`Tx.lock` clause) until the commit."""
        row = (tx.one(f"SELECT * FROM jobs WHERE id = ?{lock}", (job_id,))
               if ids.is_valid_id(job_id, ids.JOB) else None)
        if row is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")
        return row

    @staticmethod
    def _check_transition(row: Row, status: str) -> None:
        if status not in TRANSITIONS[row["status"]]:
            allowed = sorted(TRANSITIONS[row["status"]]) or "nothing (it is final)"
            raise InvalidTransitionError(f"Job {row['id']} cannot go from '{row['status']}' to "
                                         f"'{status}'; allowed: {allowed}")

    @staticmethod
    def _check_lease(row: Row, owner: str) -> None:
        """Refuse a write from ``owner`` unless the job is still running under its lease."""
        if row["status"] != "running" or row["lease_owner"] != owner:
            holder = (f"now leased by {row['lease_owner']!r}" if row["lease_owner"]
                      else "no longer leased")
            raise LeaseLostError(f"{owner!r} lost the lease of job {row['id']} (status "
                                 f"'{row['status']}', {holder}); nothing was written")

    @staticmethod
    def _event(tx: Tx, job_id: str, level: str, message: str,
               data: dict[str, Any] | None = None, type: str = "message") -> str:
        event_id = ids.new_id(ids.EVENT)
        # An event belongs to its job's tenant.
        tx.execute("INSERT INTO events (id, job_id, created_at, level, message, data, type, tenant) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT tenant FROM jobs WHERE id = ?))",
                   (event_id, job_id, now_s(), level, message, dumps(data), type, job_id))
        return event_id

    def _status_event(self, tx: Tx, row: Row, status: str, error: dict[str, Any] | None,
                      fine_tuned_model: str | None, owner: str | None = None) -> None:
        previous = row["status"]
        data: dict[str, Any] = {"status": status, "previous_status": previous}
        level = "info"
        if status == "queued":
            message = ("Files validated, moving job to queued state" if previous == "validating_files"
                       else "Fine-tuning job queued again")
        elif status == "running":
            message = ("Fine-tuning job started" if row["attempts"] == 0
                       else f"Fine-tuning job resumed (attempt {row['attempts'] + 1})")
            if owner and owner != "local":  # in a fleet, say where it runs
                message += f" on instance {owner}"
            data["lease_owner"] = owner
        elif status == "succeeded":
            message = f"The job has successfully completed: {fine_tuned_model}"
            data["fine_tuned_model"] = fine_tuned_model
        elif status == "failed":
            level = "error"
            message = "The job failed" + (f": {error['message']}" if error else "")
            data["error"] = error
        else:
            message = "Fine-tuning job cancelled"
        self._event(tx, row["id"], level, message, data)

    def _requeue(self, tx: Tx, row: Row, why: str) -> None:
        """Back to ``queued``, lease cleared; ``why`` (a warn event) says what stopped it."""
        tx.execute("UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL "
                   "WHERE id = ?", (row["id"],))
        self._event(tx, row["id"], "warn", why, {"status": "queued", "previous_status": "running",
                                                 "lease_owner": row["lease_owner"]})
