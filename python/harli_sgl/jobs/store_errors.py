"""The store's refusals, and how a failure for lack of disk space is recognised.

On the ground floor of ``jobs/``: the store (``jobs/store/``) raises these, and
so do the database backends below it (``jobs/db/``), which translate a full
disk with :func:`storage_full_raised`.

Every refusal is a :class:`StoreError` whose message is fit for an API client;
the router maps each class to its HTTP status. A full disk is a state to wait
out, not a bug, so it has its own class and a predicate that also recognises it
in exceptions from outside the store (``torch.save``, SQLite, PostgreSQL).
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

# PostgreSQL's SQLSTATE for "disk_full" (class 53, insufficient resources).
PG_DISK_FULL = "53100"


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


class LeaseLostError(StoreError):
    """The caller no longer holds the job's lease: it expired and was re-queued, or the job ended.

    Raised instead of writing, so an instance that stalled past its lease cannot
    overwrite the progress of the instance that took the job over.
    """


class FileInUseError(StoreError):
    """The file is the training or validation file of a job that has not finished."""


class FileContentError(StoreError):
    """A file's row exists but its bytes are missing or not the recorded size."""


class QuotaExceededError(StoreError):
    """The request would take its tenant past one of its quotas; ``limit`` names which."""

    def __init__(self, message: str, limit: str, value: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


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
        if getattr(e, "sqlstate", None) == PG_DISK_FULL:  # psycopg.errors.DiskFull
            return True
        if "No space left on device" in str(e):  # e.g. torch.save's RuntimeError
            return True
        e = e.__cause__ or e.__context__
    return False


def storage_full(exc: BaseException, what: str) -> StorageFullError:
    return StorageFullError(errno.ENOSPC, f"the server's disk is full ({what}: {exc})")


@contextmanager
def storage_full_raised(what: str, errors: type[BaseException] | tuple[type[BaseException], ...]
                        ) -> Iterator[None]:
    """Turn an error among ``errors`` that is a full disk into :class:`StorageFullError`."""
    try:
        yield
    except errors as exc:
        if is_storage_full(exc):
            raise storage_full(exc, what) from exc
        raise
