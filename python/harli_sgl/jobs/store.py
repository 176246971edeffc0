"""JobStore: files, fine-tuning jobs, their events and checkpoints, persisted under the workdir.

Layout: ``<workdir>/harli.db`` (SQLite, see :mod:`.schema`) and the uploaded
bytes at ``<workdir>/files/<file_id>.jsonl``. The HTTP process and the finetune
worker each open their own ``JobStore`` on the same workdir; within a process
one connection is shared by all threads behind a lock (SQLite calls are short;
the lock only orders them), across processes SQLite's WAL and busy timeout do.
Open a store per process: never carry one across ``fork``.

Nothing stored is lost by a bad request: file bytes are written to a temporary
name, fsynced and renamed into place before their row is inserted (a crash
leaves at worst an unreferenced file, never a row without bytes), and every
read-modify-write is one ``BEGIN IMMEDIATE`` transaction, so checks such as
"is this file used by a live job" and the write they guard are atomic across
both processes.

A full disk is a state to wait out, not a bug: every write that fails for lack
of space (SQLite's "database or disk is full", ``ENOSPC``/``EDQUOT`` on file
bytes) raises :class:`StorageFullError`, so the API can answer 507 and the
worker can retry later instead of crashing. Deleting a file must free space
even then, so :meth:`JobStore.delete_file` removes the bytes first when the row
cannot be deleted for lack of space, and retries.

Job lifecycle (anything else raises :class:`InvalidTransitionError`)::

    validating_files -> queued | failed | cancelled
    queued           -> running | cancelled | failed
    running          -> succeeded | failed | cancelled | queued   (re-queue after a crash)
    succeeded, failed, cancelled: terminal

Cancelling a running job makes it ``cancelled`` at once; the worker polls
:meth:`JobStore.is_cancelled` between pieces of work and stops. After a worker
crash the new worker calls :meth:`JobStore.recover_running_jobs`, which moves
jobs the dead worker left ``running`` back to ``queued``; :meth:`claim_next_job`
hands such resumed jobs out before never-started ones, then oldest first. Status
changes add an event themselves, so callers need not log them.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.objects import checkpoint_object, event_object, file_object, job_object
from harli_sgl.jobs.schema import JOB_STATUSES, TERMINAL_STATUSES, connect

DB_NAME = "harli.db"
FILES_DIR = "files"
STALE_TMP_S = 3600.0

TRANSITIONS: dict[str, frozenset[str]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "queued"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
EVENT_LEVELS = ("info", "warn", "error")
EVENT_TYPES = ("message", "metrics")


class StoreError(Exception):
    """Base of the store's refusals; each carries a message fit for an API client."""


class NotFoundError(StoreError, LookupError):
    """No object has this id (malformed ids included: they cannot name anything).

    ``param`` is set when the id came from an argument that refers to another
    object (``training_file``, the ``after`` cursor) rather than being the target.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidTransitionError(StoreError, ValueError):
    """The job's current status does not allow the requested change."""


class FileInUseError(StoreError):
    """The file is the training or validation file of a job that has not finished."""


class StorageFullError(StoreError, OSError):
    """A write failed because the disk (or the database's file system) is full."""


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failure for lack of disk space."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageFullError):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e):
            return True
        if "No space left on device" in str(e):  # e.g. torch.save's RuntimeError
            return True
        e = e.__cause__ or e.__context__
    return False


def _storage_full(exc: BaseException, what: str) -> StorageFullError:
    return StorageFullError(errno.ENOSPC, f"the server's disk is full ({what}: {exc})")


class FileContentError(StoreError):
    """A file's row exists but its bytes are missing or not the recorded size."""


def _now() -> int:
    return int(time.time())


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class JobStore:
    """Persistent state of the fine-tuning API; see the module docstring for the model."""

    def __init__(self, workdir: str) -> None:
        self.workdir = os.path.abspath(workdir)
        self.files_dir = os.path.join(self.workdir, FILES_DIR)
        os.makedirs(self.files_dir, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = connect(os.path.join(self.workdir, DB_NAME))
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        # Uploads interrupted by a crash leave '<id>.jsonl.<hex>.tmp'; they never had a
        # row. The age guard spares one the other process is writing right now.
        cutoff = time.time() - STALE_TMP_S
        for name in os.listdir(self.files_dir):
            path = os.path.join(self.files_dir, name)
            try:
                if name.endswith(".tmp") and os.path.getmtime(path) < cutoff:
                    os.unlink(path)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    # Also after a failed COMMIT: a transaction left open would wedge the
                    # connection.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if is_storage_full(exc):
                    raise _storage_full(exc, "database write") from exc
                raise

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    # ----------------------------------------------------------------- files

    def file_path(self, file_id: str) -> str:
        """Where a file's bytes live. Raises :class:`ids.InvalidId` for anything but a file id."""
        path = os.path.join(self.files_dir, ids.check_id(file_id, ids.FILE) + ".jsonl")
        # The id check already makes escaping impossible; this guards the invariant itself.
        if os.path.dirname(os.path.abspath(path)) != self.files_dir:
            raise ids.InvalidId(f"{file_id!r} does not name a file inside the workdir")
        return path

    def create_file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = ids.new_id(ids.FILE)
        path = self.file_path(file_id)
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            if is_storage_full(exc):
                raise _storage_full(exc, "writing the file's bytes") from exc
            raise
        except BaseException:
            _unlink(tmp)
            raise
        _fsync_dir(self.files_dir)
        try:
            with self._write() as db:
                db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at) "
                           "VALUES (?, ?, ?, ?, ?)", (file_id, filename, purpose, len(data), _now()))
        except BaseException:
            _unlink(path)
            raise
        return self.get_file(file_id)  # type: ignore[return-value]

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        if not ids.is_valid_id(file_id, ids.FILE):
            return None
        row = self._one("SELECT * FROM files WHERE id = ?", (file_id,))
        return file_object(row) if row else None

    def list_files(self, purpose: str | None = None, *, after: str | None = None,
                   limit: int | None = None, order: str = "desc") -> list[dict[str, Any]]:
        """Files newest first (``order="asc"``: oldest first), optionally after a cursor id."""
        where, args = ("purpose = ?", [purpose]) if purpose is not None else ("1", [])
        rows, _ = self._page("files", "file", where, args, after, limit, ascending=order == "asc")
        return [file_object(r) for r in rows]

    def read_file(self, file_id: str) -> bytes:
        row = self.get_file(file_id)
        if row is None:
            raise NotFoundError(f"No such file: {file_id!r}")
        try:
            with open(self.file_path(file_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileContentError(f"the bytes of {file_id} are missing from the server") from None
        if len(data) != row["bytes"]:
            raise FileContentError(f"{file_id} holds {len(data)} bytes on the server, "
                                   f"{row['bytes']} were uploaded")
        return data

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; False if there is none. Refuses a file a live job still needs."""
        if not ids.is_valid_id(file_id, ids.FILE):
            return False
        try:
            return self._delete_file_row(file_id)
        except StorageFullError:
            # The row cannot go while the disk is full (SQLite must write to delete), but the
            # bytes can, and removing them is what frees the space. Only a file no live job
            # uses (checked again by the retry), and the retry then deletes the row; if the
            # process died in between, the row would report its bytes as missing.
            if self.get_file(file_id) is None:
                return False
            self._check_not_in_use(self._conn, file_id)
            _unlink(self.file_path(file_id))
            return self._delete_file_row(file_id)

    def _delete_file_row(self, file_id: str) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                return False
            self._check_not_in_use(db, file_id)
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        # Row first, then bytes: a crash in between leaves unreferenced bytes, not a dangling row.
        _unlink(self.file_path(file_id))
        return True

    def _check_not_in_use(self, db: sqlite3.Connection, file_id: str) -> None:
        with self._lock:
            live = db.execute(
                "SELECT id, status FROM jobs WHERE (training_file = ? OR validation_file = ?) "
                f"AND status NOT IN ({_marks(TERMINAL_STATUSES)}) ORDER BY seq LIMIT 1",
                (file_id, file_id, *TERMINAL_STATUSES)).fetchone()
        if live is not None:
            raise FileInUseError(f"{file_id} is used by fine-tuning job {live['id']} "
                                 f"({live['status']}); cancel it or wait for it to finish")

    # ------------------------------------------------------------------ jobs

    def create_job(self, model: str, training_file: str, validation_file: str | None,
                   suffix: str | None, seed: int, hyperparameters: dict[str, Any],
                   lora: dict[str, Any], metadata: dict[str, str] | None) -> dict[str, Any]:
        """A new job in ``validating_files``; its files must exist (checked atomically)."""
        job_id = ids.new_id(ids.JOB)
        with self._write() as db:
            for param, file_id in (("training_file", training_file), ("validation_file", validation_file)):
                if file_id is None:
                    continue
                if not ids.is_valid_id(file_id, ids.FILE) or db.execute(
                        "SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                    raise NotFoundError(f"{param}: no such file {file_id!r}", param)
            db.execute(
                "INSERT INTO jobs (id, model, training_file, validation_file, suffix, seed, "
                "hyperparameters, lora, metadata, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?)",
                (job_id, model, training_file, validation_file, ids.check_suffix(suffix), seed,
                 _dumps(hyperparameters), _dumps(lora), _dumps(metadata), _now()))
            self._event(db, job_id, "info", f"Created fine-tuning job: {job_id}")
        return self.get_job(job_id)  # type: ignore[return-value]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        if not ids.is_valid_id(job_id, ids.JOB):
            return None
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_object(row) if row else None

    def jobs_with_status(self, status: str) -> list[dict[str, Any]]:
        """All jobs in ``status``, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq",
                                      (status,)).fetchall()
        return [job_object(r) for r in rows]

    def job_status_counts(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zeros included)."""
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    def list_jobs(self, after: str | None = None, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Jobs newest first; ``after`` is the id of the last job of the previous page."""
        rows, has_more = self._page("jobs", "job", "1", [], after, limit)
        return [job_object(r) for r in rows], has_more

    def set_status(self, job_id: str, status: str, *, error: dict[str, Any] | None = None,
                   fine_tuned_model: str | None = None,
                   trained_tokens: int | None = None) -> dict[str, Any]:
        """Move a job to ``status`` if the lifecycle allows it, stamping times and logging an event.

        ``error`` ({code, message, param}) is only for ``failed``. A job that succeeds
        without an explicit ``fine_tuned_model`` gets :func:`ids.fine_tuned_model_name`.
        """
        if error is not None:
            if status != "failed":
                raise ValueError(f"an error can only be recorded with status 'failed', not {status!r}")
            error = _normalise_error(error)
        if status not in TRANSITIONS:
            raise ValueError(f"unknown job status {status!r}; expected one of {list(TRANSITIONS)}")
        with self._write() as db:
            row = self._job_row(db, job_id)
            self._check_transition(row, status)
            now = _now()
            sets = {"status": status}
            if status == "running":
                sets["attempts"] = row["attempts"] + 1
                sets["started_at"] = row["started_at"] or now
            if status in TERMINAL_STATUSES:
                sets["finished_at"] = now
            if status == "failed":
                sets["error"] = _dumps(error)
            if status == "succeeded":
                sets["fine_tuned_model"] = (fine_tuned_model
                                            or ids.fine_tuned_model_name(job_id, row["suffix"]))
            if trained_tokens is not None:
                sets["trained_tokens"] = int(trained_tokens)
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                       (*sets.values(), job_id))
            self._status_event(db, row, status, error, sets.get("fine_tuned_model"))
        return self.get_job(job_id)  # type: ignore[return-value]

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished; a finished one raises :class:`InvalidTransitionError`."""
        with self._write() as db:
            row = self._job_row(db, job_id)
            if row["status"] in TERMINAL_STATUSES:
                raise InvalidTransitionError(
                    f"Job {job_id} has already {_finished_verb(row['status'])} "
                    f"(status '{row['status']}'); only unfinished jobs can be cancelled")
            db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                       (_now(), job_id))
            self._status_event(db, row, "cancelled", None, None)
        return self.get_job(job_id)  # type: ignore[return-value]

    def is_cancelled(self, job_id: str) -> bool:
        row = self._one("SELECT status FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")
        return row["status"] == "cancelled"

    def claim_next_job(self) -> dict[str, Any] | None:
        """Atomically move the next queued job to ``running`` and return it (None if none).

        Jobs that ran before (re-queued by :meth:`recover_running_jobs`) come first so
        a crash does not send a half-trained job to the back of the line; then oldest first.
        """
        # A plain read first: under WAL it takes no lock, so a worker polling an empty
        # queue never holds the write lock the HTTP process is waiting for.
        if self._one("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1") is None:
            return None
        with self._write() as db:
            row = db.execute("SELECT * FROM jobs WHERE status = 'queued' "
                             "ORDER BY started_at IS NULL, seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                       "started_at = COALESCE(started_at, ?) WHERE id = ?", (_now(), row["id"]))
            self._status_event(db, row, "running", None, None)
        return self.get_job(row["id"])

    def recover_running_jobs(self) -> list[dict[str, Any]]:
        """Re-queue every job left ``running`` (by a worker that died); return them, oldest first.

        Call once when a worker starts, before :meth:`claim_next_job`; the returned jobs
        are ``queued`` again and claim_next_job hands them out first. Resume each from
        :meth:`latest_checkpoint`.
        """
        with self._write() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status = 'running' ORDER BY seq").fetchall()
            for row in rows:
                db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (row["id"],))
                self._event(db, row["id"], "warn", "The fine-tuning worker restarted; the job is "
                            "queued again and resumes from its latest checkpoint",
                            {"status": "queued", "previous_status": "running"})
        return [self.get_job(r["id"]) for r in rows]  # type: ignore[misc]

    def update_progress(self, job_id: str, trained_tokens: int, step: int,
                        total_steps: int | None) -> bool:
        """Record progress of a running job. False (and no change) if it is no longer running."""
        with self._write() as db:
            self._job_row(db, job_id)
            cur = db.execute("UPDATE jobs SET trained_tokens = ?, step = ?, total_steps = ? "
                             "WHERE id = ? AND status = 'running'",
                             (int(trained_tokens), int(step),
                              None if total_steps is None else int(total_steps), job_id))
            return cur.rowcount == 1

    # ---------------------------------------------------------------- events

    def add_event(self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None,
                  type: str = "message") -> dict[str, Any]:
        if level not in EVENT_LEVELS:
            raise ValueError(f"event level must be one of {EVENT_LEVELS}, got {level!r}")
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        with self._write() as db:
            self._job_row(db, job_id)
            event_id = self._event(db, job_id, level, message, data, type)
        return event_object(self._one("SELECT * FROM events WHERE id = ?", (event_id,)))  # type: ignore[arg-type]

    def list_events(self, job_id: str, after: str | None = None,
                    limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """A job's events newest first; unknown job or cursor raise :class:`NotFoundError`."""
        self._require_job(job_id)
        rows, has_more = self._page("events", "event", "job_id = ?", [job_id], after, limit)
        return [event_object(r) for r in rows], has_more

    # ----------------------------------------------------------- checkpoints

    def add_checkpoint(self, job_id: str, step: int, path: str,
                       metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record an adapter saved at ``step`` (``metrics`` e.g. ``{"train_loss": 1.2}``)."""
        checkpoint_id = ids.new_id(ids.CHECKPOINT)
        metrics = {**(metrics or {}), "step": int(step)}
        with self._write() as db:
            self._job_row(db, job_id)
            db.execute("INSERT INTO checkpoints (id, job_id, step, path, metrics, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (checkpoint_id, job_id, int(step), str(path), _dumps(metrics), _now()))
        return self._checkpoints("id = ?", [checkpoint_id], None, 1)[0][0]

    def list_checkpoints(self, job_id: str, after: str | None = None,
                         limit: int = 10) -> tuple[list[dict[str, Any]], bool]:
        """A job's checkpoints newest first."""
        self._require_job(job_id)
        return self._checkpoints("job_id = ?", [job_id], after, limit)

    def latest_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        """The most recently recorded checkpoint of a job: where a resumed job starts from."""
        self._require_job(job_id)
        data, _ = self._checkpoints("job_id = ?", [job_id], None, 1)
        return data[0] if data else None

    # --------------------------------------------------------------- helpers

    def _checkpoints(self, where: str, args: list[Any], after: str | None,
                     limit: int) -> tuple[list[dict[str, Any]], bool]:
        rows, has_more = self._page("checkpoints", "checkpoint", where, args, after, limit)
        names: dict[str, str] = {}
        for r in rows:
            if r["job_id"] not in names:
                job = self._one("SELECT suffix FROM jobs WHERE id = ?", (r["job_id"],))
                names[r["job_id"]] = ids.fine_tuned_model_name(r["job_id"], job["suffix"])  # type: ignore[index]
        return [checkpoint_object(r, names[r["job_id"]]) for r in rows], has_more

    def _page(self, table: str, kind: str, where: str, args: list[Any], after: str | None,
              limit: int | None, ascending: bool = False) -> tuple[list[sqlite3.Row], bool]:
        """Rows of ``table`` matching ``where`` in ``seq`` order, strictly past the ``after`` row."""
        with self._lock:
            self._conn.execute("BEGIN")  # one snapshot for the cursor lookup and the page
            try:
                if after is not None:
                    row = self._conn.execute(f"SELECT seq FROM {table} WHERE id = ? AND {where}",
                                             (after, *args)).fetchone()
                    if row is None:
                        raise NotFoundError(f"after: no such {kind} {after!r} in this list", "after")
                    where = f"{where} AND seq {'>' if ascending else '<'} ?"
                    args = [*args, row["seq"]]
                sql = f"SELECT * FROM {table} WHERE {where} ORDER BY seq {'ASC' if ascending else 'DESC'}"
                if limit is not None:
                    sql += f" LIMIT {int(limit) + 1}"
                rows = self._conn.execute(sql, args).fetchall()
            finally:
                self._conn.execute("ROLLBACK")  # read-only: nothing to keep
        if limit is not None and len(rows) > limit:
            return rows[:limit], True
        return rows, False

    def _require_job(self, job_id: str) -> None:
        if self.get_job(job_id) is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")

    @staticmethod
    def _job_row(db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = (db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
               if ids.is_valid_id(job_id, ids.JOB) else None)
        if row is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}")
        return row

    @staticmethod
    def _check_transition(row: sqlite3.Row, status: str) -> None:
        if status not in TRANSITIONS[row["status"]]:
            allowed = sorted(TRANSITIONS[row["status"]]) or "nothing (it is final)"
            raise InvalidTransitionError(f"Job {row['id']} cannot go from '{row['status']}' to "
                                         f"'{status}'; allowed: {allowed}")

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, level: str, message: str,
               data: dict[str, Any] | None = None, type: str = "message") -> str:
        event_id = ids.new_id(ids.EVENT)
        db.execute("INSERT INTO events (id, job_id, created_at, level, message, data, type) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (event_id, job_id, _now(), level, message, _dumps(data), type))
        return event_id

    def _status_event(self, db: sqlite3.Connection, row: sqlite3.Row, status: str,
                      error: dict[str, Any] | None, fine_tuned_model: str | None) -> None:
        previous = row["status"]
        data: dict[str, Any] = {"status": status, "previous_status": previous}
        level = "info"
        if status == "queued":
            message = ("Files validated, moving job to queued state" if previous == "validating_files"
                       else "Fine-tuning job queued again")
        elif status == "running":
            message = ("Fine-tuning job started" if row["attempts"] == 0
                       else f"Fine-tuning job resumed (attempt {row['attempts'] + 1})")
        elif status == "succeeded":
            message = f"The job has successfully completed: {fine_tuned_model}"
            data["fine_tuned_model"] = fine_tuned_model
        elif status == "failed":
            level = "error"
            message = "The job failed" + (f": {error['message']}" if error else "")
            data["error"] = error
        else:
            message = "Fine-tuning job cancelled"
        self._event(db, row["id"], level, message, data)


def _normalise_error(error: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        raise ValueError(f"a job error needs string 'code' and 'message', got {error!r}")
    param = error.get("param")
    return {"code": error["code"], "message": error["message"],
            "param": None if param is None else str(param)}


def _finished_verb(status: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}[status]


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    # The rename is only durable once the directory entry is; not every platform allows it.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
