"""The SQLite schema of ``<workdir>/harli.db`` and how a connection to it is opened.

Two processes use the database at once (the HTTP process and the finetune
worker), so every connection runs in WAL mode (readers never block the writer)
with a busy timeout (a writer waits for the other process instead of failing),
in autocommit mode so the store opens its own ``BEGIN IMMEDIATE`` transactions:
taking the write lock up front means a read-then-write never has to upgrade a
shared lock, which is where SQLite would otherwise report "database is locked"
without waiting. ``synchronous=FULL`` because the write volume is tiny and a
committed job must survive a power cut.

The schema version is SQLite's ``PRAGMA user_version``: 0 means a new file
(the schema is created), :data:`SCHEMA_VERSION` means ready, anything newer was
written by a newer harli_sgl and is refused rather than misread. Every object
table has an ``seq`` integer key: ids are random, and ``seq`` is what gives
lists a total creation order (``created_at`` has one-second ties).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

_STATUS_CHECK = ", ".join(f"'{s}'" for s in JOB_STATUSES)

SCHEMA = """
CREATE TABLE files (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    model            TEXT NOT NULL,
    training_file    TEXT NOT NULL,
    validation_file  TEXT,
    suffix           TEXT,
    seed             INTEGER NOT NULL,
    hyperparameters  TEXT NOT NULL,   -- JSON {n_epochs, batch_size, learning_rate_multiplier}
    lora             TEXT NOT NULL,   -- JSON {r, alpha, target_modules, dropout}
    metadata         TEXT,            -- JSON object or NULL
    status           TEXT NOT NULL CHECK (status IN (@STATUSES@)),
    error            TEXT,            -- JSON {code, message, param} or NULL
    fine_tuned_model TEXT,
    trained_tokens   INTEGER,
    step             INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,  -- times the job entered 'running'
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,         -- first time it entered 'running'
    finished_at      INTEGER
);
CREATE INDEX jobs_by_status ON jobs (status, seq);
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    created_at  INTEGER NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message     TEXT NOT NULL,
    data        TEXT,                 -- JSON or NULL
    type        TEXT NOT NULL CHECK (type IN ('message', 'metrics'))
);
CREATE INDEX events_by_job ON events (job_id, seq);
CREATE TABLE checkpoints (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    step        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    metrics     TEXT NOT NULL,        -- JSON object, always holding "step"
    created_at  INTEGER NOT NULL
);
CREATE INDEX checkpoints_by_job ON checkpoints (job_id, seq);
""".replace("@STATUSES@", _STATUS_CHECK)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer harli_sgl; refuse instead of misreading it."""


def connect(db_path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open ``db_path`` (creating the schema if the file is new) ready for two-process use."""
    conn = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, db_path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, db_path: str) -> None:
    # Both processes may open a brand-new file at once; the write lock makes one
    # of them create the schema and the other see version 1 when it gets the lock.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise SchemaVersionError(f"{db_path} has schema version {version}; this harli_sgl "
                                     f"understands up to {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
