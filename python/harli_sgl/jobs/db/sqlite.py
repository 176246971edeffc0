"""The job store on one SQLite file: a single instance's HTTP process and worker.

Two processes use the file at once, so the connection runs in WAL mode (readers
never block the writer) with a busy timeout (a writer waits for the other
process instead of failing), in autocommit mode so writes open their own
``BEGIN IMMEDIATE`` transactions: taking the write lock up front means a
read-then-write never has to upgrade a shared lock, which is where SQLite would
otherwise report "database is locked" without waiting. Holding the database
lock is also why row locks (:meth:`SqliteTx.lock`) are empty here.
``synchronous=FULL`` because the write volume is tiny and a committed job must
survive a power cut. Within a process one connection is shared by all threads
behind a lock (calls are short; the lock only orders them). The schema version
is ``PRAGMA user_version``, as it has been since version 1.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harli_sgl.jobs.db.base import Row
from harli_sgl.jobs.store_errors import storage_full_raised

BUSY_TIMEOUT_S = 30.0


class SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(args)).rowcount

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(sql, tuple(args)).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(args)).fetchall()

    def now(self) -> float:
        return time.time()

    def lock(self, *, share: bool = False, skip_locked: bool = False) -> str:
        return ""

    def serialize(self, key: int) -> None:
        pass  # BEGIN IMMEDIATE already lets one writer at a time in

    def notify(self, channel: str, payload: str) -> None:
        pass  # one instance per file: nobody else to tell


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.where = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._enter_wal(busy_timeout_s)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            self._conn.close()
            raise

    def _enter_wal(self, busy_timeout_s: float) -> None:
        # Switching a brand-new file to WAL needs its exclusive lock, and SQLite answers
        # "database is locked" at once, without calling the busy handler, when another
        # connection opening the same new file holds a lock at that moment (six instances
        # starting together hit it about once in fifty). Retry for as long as a writer
        # would wait; once any connection has switched, the mode is stored in the file
        # and this returns "wal" straight away.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
                continue
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"{self.where}: journal mode stayed {mode!r}, not WAL")
            return

    @contextmanager
    def write(self) -> Iterator[SqliteTx]:
        with self._lock, storage_full_raised("database write", sqlite3.OperationalError):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT: a transaction left open would wedge the
                # connection.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[SqliteTx]:
        with self._lock:
            if not snapshot:
                # Autocommit reads take no lock under WAL, so a poller never holds up a writer.
                yield SqliteTx(self._conn)
                return
            self._conn.execute("BEGIN")
            try:
                yield SqliteTx(self._conn)
            finally:
                self._conn.execute("ROLLBACK")  # read-only: nothing to keep

    def migration(self):
        # Both processes may open a brand-new file at once; the write lock makes one of them
        # create the schema and the other find it done once it gets the lock.
        return self.write()

    def schema_version(self, tx: SqliteTx) -> int:
        return tx.one("PRAGMA user_version")[0]  # type: ignore[index]

    def set_schema_version(self, tx: SqliteTx, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def translate(self, ddl: str) -> str:
        return ddl.replace("@SEQ@", "INTEGER PRIMARY KEY AUTOINCREMENT")

    def wait_notify(self, channel: str, timeout_s: float) -> list[str]:
        time.sleep(timeout_s)  # nothing is ever notified: the caller polls after the wait
        return []

    def close(self) -> None:
        with self._lock:
            self._conn.close()
