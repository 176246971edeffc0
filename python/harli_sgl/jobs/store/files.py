"""Uploaded files: bytes in the files directory, a row in the database, never one without the other.

Bytes are written to a temporary name, fsynced and renamed into place before
their row is inserted, so a crash leaves at worst unreferenced bytes, never a
row without them; deleting removes the row first for the same reason. The
files directory may be shared by every instance of a fleet (the database then
is too), which is why file ids are random and why a leftover temporary is only
removed once it is an hour old: another instance may be writing it right now.

Deleting a file a live job still needs is refused, atomically with the delete:
the delete locks the file's row before it looks for jobs, and creating a job
locks the rows of the files it names, so neither can slip past the other.
A full disk must not stop deletes, because deleting is how space is freed: when
the row cannot be deleted for lack of space, the bytes go first and the row is
retried.

Files belong to the tenant that uploaded them: every lookup that names a
``tenant`` sees only that tenant's files, so another tenant's file is as absent
as one that never existed. An upload that would take the tenant past its
``max_stored_bytes`` is refused (:class:`QuotaExceededError`) under a lock on
the tenant's row, so two uploads at once cannot both slip under the limit.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.artifacts import fsync_path
from harli_sgl.jobs.db.base import Tx
from harli_sgl.jobs.objects import file_object
from harli_sgl.jobs.schema import TERMINAL_STATUSES
from harli_sgl.jobs.store.base import StoreBase, marks, now_s, owned
from harli_sgl.jobs.store_errors import (FileContentError, FileInUseError, NotFoundError,
                                         StorageFullError, is_storage_full, storage_full)
from harli_sgl.jobs.store.quota import check_stored_bytes
from harli_sgl.jobs.tenants import DEFAULT_TENANT

STALE_TMP_S = 3600.0


class FileRecords(StoreBase):
    files_dir: str

    def _remove_stale_temporaries(self) -> None:
        # Uploads interrupted by a crash leave '<id>.jsonl.<hex>.tmp'; they never had a row.
        cutoff = time.time() - STALE_TMP_S
        for name in os.listdir(self.files_dir):
            path = os.path.join(self.files_dir, name)
            try:
                if name.endswith(".tmp") and os.path.getmtime(path) < cutoff:
                    os.unlink(path)
            except OSError:
                pass

    def file_path(self, file_id: str) -> str:
        """Where a file's bytes live. Raises :class:`ids.InvalidId` for anything but a file id."""
        path = os.path.join(self.files_dir, ids.check_id(file_id, ids.FILE) + ".jsonl")
        # The id check already makes escaping impossible; this guards the invariant itself.
        if os.path.dirname(os.path.abspath(path)) != self.files_dir:
            raise ids.InvalidId(f"{file_id!r} does not name a file inside the files directory")
        return path

    def create_file(self, filename: str, purpose: str, data: bytes,
                    tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        # A first check before any byte is written; the one that counts is in the transaction.
        with self._db.read() as tx:
            check_stored_bytes(tx, tenant, len(data), self.default_limits, lock=False)
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
                raise storage_full(exc, "writing the file's bytes") from exc
            raise
        except BaseException:
            _unlink(tmp)
            raise
        fsync_path(self.files_dir)
        try:
            with self._db.write() as tx:
                check_stored_bytes(tx, tenant, len(data), self.default_limits)
                tx.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, tenant) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (file_id, filename, purpose, len(data), now_s(), tenant))
        except BaseException:
            _unlink(path)
            raise
        return self.get_file(file_id)  # type: ignore[return-value]

    def get_file(self, file_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The file, if it exists (and, given ``tenant``, belongs to that tenant)."""
        if not ids.is_valid_id(file_id, ids.FILE):
            return None
        where, args = owned("id = ?", [file_id], tenant)
        row = self._one(f"SELECT * FROM files WHERE {where}", tuple(args))
        return file_object(row) if row else None

    def list_files(self, purpose: str | None = None, *, after: str | None = None,
                   limit: int | None = None, order: str = "desc",
                   tenant: str | None = None) -> list[dict[str, Any]]:
        """Files newest first (``order="asc"``: oldest first), optionally after a cursor id."""
        where, args = ("purpose = ?", [purpose]) if purpose is not None else ("TRUE", [])
        where, args = owned(where, args, tenant)
        rows, _ = self._page("files", "file", where, args, after, limit, ascending=order == "asc")
        return [file_object(r) for r in rows]

    def read_file(self, file_id: str, tenant: str | None = None) -> bytes:
        row = self.get_file(file_id, tenant)
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

    def delete_file(self, file_id: str, tenant: str | None = None) -> bool:
        """Delete a file; False if there is none (of ``tenant``'s). Refuses a file a live job needs."""
        if not ids.is_valid_id(file_id, ids.FILE):
            return False
        try:
            return self._delete_file_row(file_id, tenant)
        except StorageFullError:
            # Only a file no live job uses (checked again by the retry) loses its bytes here;
            # if the process died before the retry, the row would report its bytes as missing.
            if self.get_file(file_id, tenant) is None:
                return False
            with self._db.read() as tx:
                check_not_in_use(tx, file_id)
            _unlink(self.file_path(file_id))
            return self._delete_file_row(file_id, tenant)

    def _delete_file_row(self, file_id: str, tenant: str | None) -> bool:
        where, args = owned("id = ?", [file_id], tenant)
        with self._db.write() as tx:
            if tx.one(f"SELECT 1 FROM files WHERE {where}{tx.lock()}", tuple(args)) is None:
                return False
            check_not_in_use(tx, file_id)
            tx.execute("DELETE FROM files WHERE id = ?", (file_id,))
        # Row first, then bytes: a crash in between leaves unreferenced bytes, not a dangling row.
        _unlink(self.file_path(file_id))
        return True


def check_files_exist(tx: Tx, files: dict[str, str | None], tenant: str) -> None:
    """Each ``{param: file_id}`` names a file of ``tenant``, kept until the commit (see the module doc)."""
    for param, file_id in files.items():
        if file_id is None:
            continue
        if not ids.is_valid_id(file_id, ids.FILE) or tx.one(
                f"SELECT 1 FROM files WHERE id = ? AND tenant = ?{tx.lock(share=True)}",
                (file_id, tenant)) is None:
            raise NotFoundError(f"{param}: no such file {file_id!r}", param)



def check_not_in_use(tx: Tx, file_id: str) -> None:
    live = tx.one(
        "SELECT id, status FROM jobs WHERE (training_file = ? OR validation_file = ?) "
        f"AND status NOT IN ({marks(TERMINAL_STATUSES)}) ORDER BY seq LIMIT 1",
        (file_id, file_id, *TERMINAL_STATUSES))
    if live is not None:
        raise FileInUseError(f"{file_id} is used by fine-tuning job {live['id']} "
                             f"({live['status']}); cancel it or wait for it to finish")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
