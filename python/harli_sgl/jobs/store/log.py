"""A job's log: its events (messages and metrics) and its checkpoints, newest first.

Both are append-only and paged by ``seq`` with OpenAI's ``after`` cursor. A
checkpoint row records where an adapter was saved at a step; the newest one is
where a re-queued job resumes. A worker writing a checkpoint passes ``owner=``,
so a checkpoint from an instance that lost the job's lease is refused
(:class:`LeaseLostError`) instead of becoming the resume point of the instance
that holds it now. Both belong to their job's tenant: the lists take the
caller's ``tenant`` and another tenant's job is as absent as a missing one.

A checkpoint is also a model: its ``fine_tuned_model_checkpoint`` name can be
served like the job's adapter, and :meth:`JobLog.checkpoint_named` turns that
name back into the checkpoint (the newest one recorded at that step: a job
resumed before its next checkpoint may record a step twice).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harli_sgl.jobs import ids
from harli_sgl.jobs.objects import checkpoint_object, event_object
from harli_sgl.jobs.store.base import StoreBase, dumps, now_s

EVENT_LEVELS = ("info", "warn", "error")
EVENT_TYPES = ("message", "metrics")


class NamedCheckpoint(NamedTuple):
    name: str      # its fine_tuned_model_checkpoint
    job_id: str
    tenant: str    # its job's tenant, which owns it
    step: int
    path: str      # the adapter's directory on the server


class JobLog(StoreBase):
    def add_event(self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None,
                  type: str = "message") -> dict[str, Any]:
        if level not in EVENT_LEVELS:
            raise ValueError(f"event level must be one of {EVENT_LEVELS}, got {level!r}")
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        with self._db.write() as tx:
            self._job_row(tx, job_id)
            event_id = self._event(tx, job_id, level, message, data, type)
        return event_object(self._one("SELECT * FROM events WHERE id = ?", (event_id,)))  # type: ignore[arg-type]

    def list_events(self, job_id: str, after: str | None = None, limit: int = 20,
                    tenant: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """A job's events newest first; unknown job or cursor raise :class:`NotFoundError`."""
        self._require_job(job_id, tenant)
        rows, has_more = self._page("events", "event", "job_id = ?", [job_id], after, limit)
        return [event_object(r) for r in rows], has_more

    def add_checkpoint(self, job_id: str, step: int, path: str,
                       metrics: dict[str, Any] | None = None, *,
                       owner: str | None = None) -> dict[str, Any]:
        """Record an adapter saved at ``step`` (``metrics`` e.g. ``{"train_loss": 1.2}``).

        With ``owner``, a job not running under that owner's lease raises
        :class:`LeaseLostError` and nothing is recorded.
        """
        checkpoint_id = ids.new_id(ids.CHECKPOINT)
        metrics = {**(metrics or {}), "step": int(step)}
        with self._db.write() as tx:
            row = self._job_row(tx, job_id, tx.lock(share=True))
            if owner is not None:
                self._check_lease(row, owner)
            tx.execute("INSERT INTO checkpoints (id, job_id, step, path, metrics, created_at, tenant) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (checkpoint_id, job_id, int(step), str(path), dumps(metrics), now_s(),
                        row["tenant"]))
        return self._checkpoints("id = ?", [checkpoint_id], None, 1)[0][0]

    def list_checkpoints(self, job_id: str, after: str | None = None, limit: int = 10,
                         tenant: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """A job's checkpoints newest first."""
        self._require_job(job_id, tenant)
        return self._checkpoints("job_id = ?", [job_id], after, limit)

    def latest_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        """The most recently recorded checkpoint of a job: where a resumed job starts from."""
        self._require_job(job_id)
        data, _ = self._checkpoints("job_id = ?", [job_id], None, 1)
        return data[0] if data else None

    def checkpoint_named(self, name: str) -> NamedCheckpoint | None:
        """The checkpoint whose ``fine_tuned_model_checkpoint`` is ``name``, of any job; else None."""
        parsed = ids.parse_checkpoint_model_name(name)
        if parsed is None:
            return None
        model, step, job_hex = parsed
        low = f"{ids.JOB}-{job_hex}"
        # A range on the id (every job id starting with those 12 hex), so the index answers.
        rows = self._all("SELECT c.job_id, c.tenant, c.step, c.path, j.fine_tuned_model, j.suffix, "
                         "j.model FROM checkpoints c JOIN jobs j ON j.id = c.job_id "
                         "WHERE c.job_id >= ? AND c.job_id < ? AND c.step = ? ORDER BY c.seq DESC",
                         (low, low + "g", step))
        for r in rows:
            own = r["fine_tuned_model"] or ids.fine_tuned_model_name(
                r["job_id"], r["suffix"], r["model"], r["tenant"])
            if own == model:
                return NamedCheckpoint(name, r["job_id"], r["tenant"], int(r["step"]), r["path"])
        return None

    def _checkpoints(self, where: str, args: list[Any], after: str | None,
                     limit: int) -> tuple[list[dict[str, Any]], bool]:
        rows, has_more = self._page("checkpoints", "checkpoint", where, args, after, limit)
        names: dict[str, str] = {}
        for r in rows:
            if r["job_id"] not in names:
                job = self._one("SELECT suffix, model, tenant, fine_tuned_model FROM jobs "
                                "WHERE id = ?", (r["job_id"],))
                # The adapter's own name once it has one (jobs from before tenants kept theirs).
                names[r["job_id"]] = job["fine_tuned_model"] or ids.fine_tuned_model_name(  # type: ignore[index]
                    r["job_id"], job["suffix"], job["model"], job["tenant"])  # type: ignore[index]
        return [checkpoint_object(r, names[r["job_id"]]) for r in rows], has_more
