"""The job store's tables, as the list of steps that build them version by version.

``MIGRATIONS[v - 1]`` turns a version ``v - 1`` database into version ``v``;
a new database runs them all, an older one only those it lacks (see
:mod:`harli_sgl.jobs.db.migrations`), and a database newer than
:data:`SCHEMA_VERSION` is refused rather than misread. Steps are written once
for both backends: ``@SEQ@`` is the auto-numbered key (SQLite ``AUTOINCREMENT``,
PostgreSQL ``GENERATED ... AS IDENTITY``), and each backend's ``translate``
widens ``INTEGER`` and ``REAL`` to PostgreSQL's 64-bit types. On SQLite,
version 1 is byte for byte the schema workdirs were created with before
versions were stepped, so they open unchanged and upgrade in place.

Every object table has a ``seq`` key: ids are random, and ``seq`` is what gives
lists a total creation order (``created_at`` has one-second ties). Version 2
adds the fleet: a job's lease (which instance runs it, until when; see
:mod:`harli_sgl.jobs.store.leases`), ``succeeded_seq`` (the order in which
adapters became servable, which instances poll), and the ``instances`` table
each serving instance heart-beats into. Version 3 adds tenants: every file,
job, event and checkpoint carries the tenant that owns it (rows from before
belong to ``default``), ``api_keys`` holds each key's SHA-256, never the key
(:mod:`harli_sgl.jobs.keys`), ``tenants`` each tenant's own quotas, and
``adapter_shares`` which adapters an admin shared with which tenants.
"""

from __future__ import annotations

JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

_STATUS_CHECK = ", ".join(f"'{s}'" for s in JOB_STATUSES)

V1_FILES_JOBS_EVENTS_CHECKPOINTS = """
CREATE TABLE files (
    seq         @SEQ@,
    id          TEXT NOT NULL UNIQUE,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE jobs (
    seq              @SEQ@,
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
    seq         @SEQ@,
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
    seq         @SEQ@,
    id          TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    step        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    metrics     TEXT NOT NULL,        -- JSON object, always holding "step"
    created_at  INTEGER NOT NULL
);
CREATE INDEX checkpoints_by_job ON checkpoints (job_id, seq);
""".replace("@STATUSES@", _STATUS_CHECK)

V2_LEASES_INSTANCES = """
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;        -- instance running the job, NULL otherwise
ALTER TABLE jobs ADD COLUMN lease_expires_at REAL;   -- database clock, seconds since the epoch
ALTER TABLE jobs ADD COLUMN succeeded_seq INTEGER;   -- 1, 2, ... in the order jobs succeeded
UPDATE jobs SET succeeded_seq = seq WHERE status = 'succeeded';
CREATE UNIQUE INDEX jobs_by_succeeded_seq ON jobs (succeeded_seq);
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    model        TEXT NOT NULL,
    harvest      REAL NOT NULL,       -- measured free compute (tokens/s, or a fraction)
    room         INTEGER NOT NULL,    -- how many more jobs its worker can take
    heartbeat_at REAL NOT NULL        -- database clock
);
"""

V3_TENANTS = """
ALTER TABLE files ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE checkpoints ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX files_by_tenant ON files (tenant, seq);
CREATE INDEX jobs_by_tenant ON jobs (tenant, status, seq);
CREATE INDEX jobs_by_model ON jobs (fine_tuned_model);
CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    created_at       INTEGER NOT NULL,
    max_running_jobs INTEGER,         -- NULL: the server's default
    max_queued_jobs  INTEGER,
    max_stored_bytes INTEGER
);
INSERT INTO tenants (id, created_at) VALUES ('default', 0);
CREATE TABLE api_keys (
    seq         @SEQ@,
    id          TEXT NOT NULL UNIQUE,    -- key-<hex>: how lists and revokes name it
    tenant      TEXT NOT NULL REFERENCES tenants (id),
    key_hash    TEXT NOT NULL UNIQUE,    -- SHA-256 of the key, hex
    hint        TEXT NOT NULL,           -- '...' and its last 4 characters
    name        TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE adapter_shares (
    adapter     TEXT NOT NULL,           -- a fine-tuned model or another served adapter
    tenant      TEXT NOT NULL,           -- who else may serve it ('*': everyone)
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (adapter, tenant)
);
"""

V4_RESULTS_ESTIMATE = """
ALTER TABLE jobs ADD COLUMN result_files TEXT;          -- JSON list of file ids, NULL: none
ALTER TABLE jobs ADD COLUMN estimated_finish INTEGER;   -- unix seconds, from the measured rate
"""

MIGRATIONS: tuple[str, ...] = (V1_FILES_JOBS_EVENTS_CHECKPOINTS, V2_LEASES_INSTANCES, V3_TENANTS,
                               V4_RESULTS_ESTIMATE)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer harli_sgl; refuse instead of misreading it."""


def statements(step: str) -> list[str]:
    """A step's statements, one by one (no step has a ``;`` inside a literal or comment)."""
    return [s.strip() for s in step.split(";") if s.strip()]
