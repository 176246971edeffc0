"""Schema versions on both backends: a version-1 SQLite workdir upgrades in place, migrations
run once however many stores open a new database together, and a newer schema is refused."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import psycopg
import pytest

from harli_sgl.jobs import ids
from harli_sgl.jobs.objects import checkpoint_object, event_object, file_object, job_object
from harli_sgl.jobs.schema import SCHEMA_VERSION, SchemaVersionError
from harli_sgl.jobs.store import DB_NAME, Adapter, JobStore, Lease

from store_util import DATA, HP, LORA, write_v2_store

# harli.db as harli_sgl wrote it before schema versions were stepped (version 1), kept
# verbatim: the upgrade must work on exactly this, whatever the current schema says.
V1_SCHEMA = """
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
    status           TEXT NOT NULL CHECK (status IN ('validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
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
"""


def write_v1_workdir(work: str) -> dict[str, str]:
    """A version-1 workdir with a file and jobs in every interesting state; their ids."""
    os.makedirs(os.path.join(work, "files"))
    made = {"file": ids.new_id(ids.FILE)}
    with open(os.path.join(work, "files", made["file"] + ".jsonl"), "wb") as f:
        f.write(DATA)
    db = sqlite3.connect(os.path.join(work, DB_NAME))
    db.executescript(V1_SCHEMA)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
               (made["file"], "train.jsonl", "fine-tune", len(DATA), 1_700_000_000))
    for status, extra in (("queued", {}),
                          ("running", {"attempts": 1, "started_at": 1_700_000_100, "step": 4,
                                       "total_steps": 10, "trained_tokens": 400}),
                          ("succeeded", {"attempts": 1, "started_at": 1_700_000_100,
                                         "finished_at": 1_700_000_200, "fine_tuned_model": "ft-v1",
                                         "trained_tokens": 1000})):
        made[status] = ids.new_id(ids.JOB)
        row = {"id": made[status], "model": "base", "training_file": made["file"], "seed": 7,
               "hyperparameters": json.dumps(HP), "lora": json.dumps(LORA),
               "metadata": json.dumps({"team": "a"}), "status": status,
               "created_at": 1_700_000_000, **extra}
        db.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                   tuple(row.values()))
        db.execute("INSERT INTO events (id, job_id, created_at, level, message, data, type) "
                   "VALUES (?, ?, ?, 'info', ?, ?, 'message')",
                   (ids.new_id(ids.EVENT), made[status], 1_700_000_000, f"it is {status}",
                    json.dumps({"status": status})))
    db.execute("INSERT INTO checkpoints (id, job_id, step, path, metrics, created_at) "
               "VALUES (?, ?, 4, '/ckpt/4', ?, 1700000150)",
               (ids.new_id(ids.CHECKPOINT), made["running"], json.dumps({"step": 4, "train_loss": 1.5})))
    db.commit()
    db.close()
    return made


def everything(db_path: str) -> dict:
    """Every object the API can show, built from the raw rows; rows from before tenants
    (no ``tenant`` column) as the default tenant's, and from before version 4 with no results
    file and no estimate, which is what upgrading must make them."""
    db = sqlite3.connect(db_path)
    db.row_factory = lambda cursor, row: {"tenant": "default", "result_files": None,
                                          "estimated_finish": None,
                                          **sqlite3.Row(cursor, row)}  # type: ignore[dict-item]
    names = {r["id"]: r["fine_tuned_model"] or ids.fine_tuned_model_name(
                 r["id"], r["suffix"], r["model"], r["tenant"])
             for r in db.execute("SELECT * FROM jobs")}
    state = {
        "files": [file_object(r) for r in db.execute("SELECT * FROM files ORDER BY seq")],
        "jobs": [job_object(r) for r in db.execute("SELECT * FROM jobs ORDER BY seq")],
        "events": [event_object(r) for r in db.execute("SELECT * FROM events ORDER BY seq")],
        "checkpoints": [checkpoint_object(r, names[r["job_id"]])
                        for r in db.execute("SELECT * FROM checkpoints ORDER BY seq")],
    }
    db.close()
    return state


def test_a_version_1_sqlite_workdir_upgrades_in_place(tmp_path):
    work = str(tmp_path / "work")
    made = write_v1_workdir(work)
    db_path = os.path.join(work, DB_NAME)
    before = everything(db_path)

    store = JobStore(work)
    try:
        db = sqlite3.connect(db_path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
        assert {"lease_owner", "lease_expires_at", "succeeded_seq"} <= columns
        assert {r[1] for r in db.execute("PRAGMA table_info(instances)")} == {
            "id", "url", "model", "harvest", "room", "heartbeat_at"}
        db.close()
        assert everything(db_path) == before  # nothing lost, nothing changed
        assert store.list_files(order="asc") == before["files"]
        assert store.list_jobs(limit=100)[0] == before["jobs"][::-1]
        assert store.read_file(made["file"]) == DATA
        for job in before["jobs"]:
            assert store.get_job(job["id"]) == job
        assert [e for j in before["jobs"] for e in store.list_events(j["id"])[0]] == before["events"]
        assert store.list_checkpoints(made["running"])[0] == before["checkpoints"]

        # Version-1 rows behave under version-2 rules: the succeeded job's adapter is listed,
        # the running job has no owner, so whichever instance recovers first takes it back.
        assert store.succeeded_adapters() == [Adapter(3, "ft-v1", made["succeeded"])]
        assert store.adapter_access("default", "ft-v1").owner == "default"
        assert store.lease(made["running"]) == Lease(None, None)
        assert [j["id"] for j in store.recover_running_jobs("instance-x")] == [made["running"]]
        resumed = store.claim_next_job("instance-x")
        assert resumed["id"] == made["running"] and resumed["progress"]["attempts"] == 2
        assert store.latest_checkpoint(made["running"])["step_number"] == 4
        store.set_status(resumed["id"], "succeeded", owner="instance-x")
        assert store.succeeded_adapters(after_seq=3)[0].seq == 4
    finally:
        store.close()
    JobStore(work).close()  # and it opens again at the current version, untouched
    assert sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_sqlite_settings_and_a_newer_schema_is_refused(tmp_path):
    work = str(tmp_path / "work")
    JobStore(work).close()
    db = sqlite3.connect(os.path.join(work, DB_NAME))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "files", "jobs", "events", "checkpoints", "instances"}
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaVersionError, match="understands up to"):
        JobStore(work)


def test_postgres_schema_version_and_a_newer_schema_is_refused(tmp_path, postgres_url):
    JobStore(str(tmp_path / "a"), db_url=postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert db.execute("SELECT id, version FROM harli_schema").fetchall() == [(1, SCHEMA_VERSION)]
        seq = db.execute("SELECT data_type, is_identity FROM information_schema.columns "
                         "WHERE table_name = 'jobs' AND column_name = 'seq'").fetchone()
        assert seq == ("bigint", "YES")
        db.execute("UPDATE harli_schema SET version = version + 1")
    with pytest.raises(SchemaVersionError, match="understands up to") as err:
        JobStore(str(tmp_path / "b"), db_url=postgres_url)
    assert ":***@" in str(err.value) and postgres_url.split(":")[2].split("@")[0] not in str(err.value)


def test_stores_opening_a_new_database_together_migrate_it_once(tmp_path, db_url):
    """Every instance of a fleet may start at the same moment on an empty database."""
    shared = str(tmp_path / "work")  # SQLite: one workdir; PostgreSQL: one database
    barrier = threading.Barrier(6)
    opened: list[JobStore] = []
    errors: list[BaseException] = []

    def open_store(i: int) -> None:
        barrier.wait()
        try:
            opened.append(JobStore(shared if db_url is None else str(tmp_path / f"w{i}"),
                                   db_url=db_url, files_dir=str(tmp_path / "files")))
        except BaseException as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        # All of them work on the same, complete schema.
        f = opened[0].create_file("train.jsonl", "fine-tune", DATA)
        assert all(s.get_file(f["id"]) == f for s in opened)
        opened[1].heartbeat_instance("i", "http://i", "base", 1.0, 1)
        assert [i["id"] for i in opened[2].live_instances()] == ["i"]
    finally:
        for s in opened:
            s.close()


def test_a_store_of_the_release_before_tenants_upgrades_in_place(tmp_path, db_url):
    """Today's release (schema 2) on either backend: nothing lost, all the default tenant's."""
    work = str(tmp_path / "work")
    made = write_v2_store(work, db_url)
    store = JobStore(work, db_url=db_url)
    try:
        with store._db.read() as tx:
            for table in ("files", "jobs", "events", "checkpoints"):
                rows = tx.all(f"SELECT tenant FROM {table}")
                assert rows and {r["tenant"] for r in rows} == {"default"}, table
            assert [r["id"] for r in tx.all("SELECT id FROM tenants")] == ["default"]
            assert tx.all("SELECT * FROM instances")  # the fleet's table is untouched
        assert [f["id"] for f in store.list_files(tenant="default")] == [made["file"]]
        assert store.read_file(made["file"], "default") == DATA
        jobs = {j["status"]: j for j in store.list_jobs(tenant="default")[0]}
        assert {s: j["id"] for s, j in jobs.items()} == {
            s: made[s] for s in ("queued", "running", "succeeded")}
        assert all(j["organization_id"] == "default" and j["metadata"] == {"team": "a"}
                   and j["user_provided_suffix"] == "old" for j in jobs.values())
        assert jobs["running"]["progress"]["step"] == 4 and jobs["running"]["trained_tokens"] == 400
        assert jobs["succeeded"]["fine_tuned_model"] == made["adapter"]
        for status, job in jobs.items():
            assert [e["message"] for e in store.list_events(job["id"], tenant="default")[0]] == [
                f"it is {status}"]
        [ckpt], _ = store.list_checkpoints(made["running"], tenant="default")
        assert ckpt["id"] == made["checkpoint"] and ckpt["metrics"] == {"step": 4, "train_loss": 1.5}
        # The adapter keeps its old name, and its files the directory they were written to.
        assert made["adapter"] == ids.adapter_dir_name(made["succeeded"], "old")
        assert store.succeeded_adapters() == [Adapter(1, made["adapter"], made["succeeded"], "old")]
        assert store.adapter_access("default", made["adapter"]).allows("default", False)
        # Another tenant sees none of it.
        assert store.list_files(tenant="acme") == [] and store.list_jobs(tenant="acme")[0] == []
        assert store.get_job(made["succeeded"], "acme") is None
        assert store.get_file(made["file"], "acme") is None
        assert not store.adapter_access("acme", made["adapter"]).allows("acme", False)
        # And the store goes on: the old running job resumes, new tenants get their own objects.
        assert [j["id"] for j in store.recover_running_jobs("local")] == [made["running"]]
        assert store.create_file("t.jsonl", "fine-tune", DATA, tenant="acme")["id"]
    finally:
        store.close()
