"""What the job store needs from a database: the contract both backends keep.

The store is one body of SQL written once, with ``?`` placeholders and only
syntax SQLite and PostgreSQL share (``ON CONFLICT ... DO UPDATE``, ``IS NULL``
in ``ORDER BY``, ``TRUE``); everything the two disagree on sits behind these
two protocols:

* **transactions.** :meth:`Database.write` is one read-modify-write transaction
  that is atomic against every other process and instance: SQLite takes the
  database's write lock up front (``BEGIN IMMEDIATE``), PostgreSQL runs a
  ``READ COMMITTED`` transaction in which the store locks the rows it decides on
  with :meth:`Tx.lock` (``FOR UPDATE``, ``FOR SHARE``, ``SKIP LOCKED``), which is
  SQL text that is empty on SQLite, where the database lock already serialises;
* **the clock.** :meth:`Tx.now` is the database's clock, so lease deadlines set
  by instances whose clocks disagree are compared on one clock;
* **ordering.** :meth:`Tx.serialize` makes writers of one kind take turns until
  they commit, so a counter read and bumped in the transaction is handed out in
  commit order (a poller that saw ``n`` never misses a later commit of ``n - 1``);
* **rows** are read-only mappings keyed by column name (``row["id"]``);
* **errors**: a write that fails for lack of space raises
  :class:`~harli_sgl.jobs.store_errors.StorageFullError`; other database errors
  pass through unchanged;
* **schema versioning** (:mod:`.migrations` drives it): :meth:`Database.migration`
  is a write transaction that also excludes other migrations, and the version
  lives where each backend keeps such things.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

Row = Mapping[str, Any]

# Keys of the writers that take turns (Tx.serialize).
SUCCEEDED_ORDER = 1


class Tx(Protocol):
    """One open transaction (or, from ``read()``, one consistent read)."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def now(self) -> float:
        """The database's clock, seconds since the epoch."""

    def lock(self, *, share: bool = False, skip_locked: bool = False) -> str:
        """The clause a ``SELECT`` ends with to lock the rows it returns until commit."""

    def serialize(self, key: int) -> None:
        """Wait until no other transaction that called ``serialize(key)`` is open."""

    def notify(self, channel: str, payload: str) -> None:
        """Tell listeners on ``channel`` once this transaction commits (no-op without listeners)."""


class Database(Protocol):
    """A connection (pool) to one job-store database; safe to share between threads."""

    dialect: str
    where: str  # for messages: the file, or the URL without its password

    def write(self) -> AbstractContextManager[Tx]:
        """A read-modify-write transaction; commits on success, rolls back on any exception."""

    def read(self, snapshot: bool = False) -> AbstractContextManager[Tx]:
        """Reads outside any write; ``snapshot=True``: all of them see one moment."""

    def migration(self) -> AbstractContextManager[Tx]:
        """A write transaction no other migration of this database runs beside."""

    def schema_version(self, tx: Tx) -> int:
        """0 for a database without the schema."""

    def set_schema_version(self, tx: Tx, version: int) -> None: ...

    def translate(self, ddl: str) -> str:
        """The backend's spelling of a schema statement (see :mod:`harli_sgl.jobs.schema`)."""

    def wait_notify(self, channel: str, timeout_s: float) -> list[str]:
        """Payloads notified on ``channel`` since the previous call, waiting up to ``timeout_s``."""

    def close(self) -> None: ...
