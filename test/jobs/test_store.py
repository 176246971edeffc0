"""JobStore on both backends: files, the job lifecycle, events, checkpoints, threads and processes.

Every test that takes ``store`` or ``make_store`` runs twice: on a real SQLite
file in the workdir and on a fresh database of a real PostgreSQL server (see
``db_url`` in test/conftest.py). Leases, the fleet and migrations have their own files
under test/jobs/store and test/jobs/db.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from harli_sgl.jobs import ids
from harli_sgl.jobs.schema import JOB_STATUSES
from harli_sgl.jobs.store import (TRANSITIONS, FileContentError, FileInUseError,
                                  InvalidTransitionError, JobStore, NotFoundError)

from store_util import DATA, HP, LORA, job_in, new_job, queued_job

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "python")


# ----------------------------------------------------------------------------- files

def test_file_roundtrip_and_layout(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)
    assert f == {"id": f["id"], "object": "file", "bytes": len(DATA), "created_at": f["created_at"],
                 "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed",
                 "status_details": None}
    assert ids.is_valid_id(f["id"], ids.FILE)
    assert abs(f["created_at"] - time.time()) < 60
    path = store.file_path(f["id"])
    assert path == os.path.join(store.workdir, "files", f["id"] + ".jsonl")
    assert open(path, "rb").read() == DATA == store.read_file(f["id"])
    assert store.get_file(f["id"]) == f
    assert os.listdir(store.files_dir) == [f["id"] + ".jsonl"]  # no temporary left behind


def test_list_files_newest_first_by_purpose_and_cursor(store):
    made = [store.create_file(f"{i}.jsonl", "fine-tune" if i % 2 else "batch", DATA) for i in range(6)]
    newest_first = [f["id"] for f in reversed(made)]
    assert [f["id"] for f in store.list_files()] == newest_first
    assert [f["id"] for f in store.list_files(order="asc")] == newest_first[::-1]
    assert [f["id"] for f in store.list_files("batch")] == [made[4]["id"], made[2]["id"], made[0]["id"]]
    assert [f["id"] for f in store.list_files(after=newest_first[1], limit=2)] == newest_first[2:4]
    with pytest.raises(NotFoundError) as err:
        store.list_files("batch", after=made[1]["id"])  # a fine-tune file is not in that list
    assert err.value.param == "after"


def test_delete_file(store):
    keep = store.create_file("keep.jsonl", "fine-tune", DATA)
    gone = store.create_file("gone.jsonl", "fine-tune", DATA)
    assert store.delete_file(gone["id"]) is True
    assert store.get_file(gone["id"]) is None
    assert not os.path.exists(store.file_path(gone["id"]))
    assert store.delete_file(gone["id"]) is False
    assert store.read_file(keep["id"]) == DATA


def test_a_file_used_by_a_live_job_cannot_be_deleted(store):
    job = queued_job(store)
    with pytest.raises(FileInUseError, match=job["id"]):
        store.delete_file(job["training_file"])
    assert store.read_file(job["training_file"]) == DATA
    store.request_cancel(job["id"])
    assert store.delete_file(job["training_file"]) is True


def test_validation_file_counts_as_used(store):
    val = store.create_file("val.jsonl", "fine-tune", DATA)
    new_job(store, validation_file=val["id"])
    with pytest.raises(FileInUseError):
        store.delete_file(val["id"])


@pytest.mark.parametrize("bad", ["../harli.db", "file-..%2F", "../../etc/passwd", "file-" + "0" * 23,
                                 "files/../harli.db", "ftjob-" + "0" * 24])
def test_path_like_ids_never_reach_the_filesystem(store, bad):
    def snapshot() -> dict[str, int]:
        return {os.path.join(d, n): os.path.getsize(os.path.join(d, n))
                for d, _, names in os.walk(store.workdir) for n in names
                if not n.endswith(("-wal", "-shm"))}

    before = snapshot()
    assert store.get_file(bad) is None
    assert store.delete_file(bad) is False
    with pytest.raises(ids.InvalidId):
        store.file_path(bad)
    with pytest.raises(NotFoundError):
        store.read_file(bad)
    assert snapshot() == before


def test_stale_upload_temporaries_are_removed_on_open(make_store):
    store = make_store()
    kept = store.create_file("train.jsonl", "fine-tune", DATA)
    stale = os.path.join(store.files_dir, ids.new_id(ids.FILE) + ".jsonl.0a0b.tmp")
    fresh = os.path.join(store.files_dir, ids.new_id(ids.FILE) + ".jsonl.0c0d.tmp")
    for path in (stale, fresh):
        open(path, "wb").close()
    os.utime(stale, (time.time() - 2 * 3600, time.time() - 2 * 3600))
    store.close()
    reopened = make_store()
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert reopened.read_file(kept["id"]) == DATA


def test_missing_or_damaged_bytes_are_reported(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)
    with open(store.file_path(f["id"]), "ab") as fh:
        fh.write(b"garbage")
    with pytest.raises(FileContentError, match="bytes"):
        store.read_file(f["id"])
    os.unlink(store.file_path(f["id"]))
    with pytest.raises(FileContentError, match="missing"):
        store.read_file(f["id"])


# ------------------------------------------------------------------------------ jobs

def test_create_job_shape(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)
    job = new_job(store, f["id"], suffix="bot", seed=42, metadata={"team": "a"})
    assert ids.is_valid_id(job["id"], ids.JOB)
    assert job["object"] == "fine_tuning.job"
    assert job["status"] == "validating_files"
    assert job["model"] == "base" and job["training_file"] == f["id"] and job["seed"] == 42
    assert job["hyperparameters"] == HP
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": HP}}
    assert job["lora"] == LORA and job["metadata"] == {"team": "a"}
    assert job["user_provided_suffix"] == "bot"
    assert job["error"] is None and job["fine_tuned_model"] is None and job["finished_at"] is None
    assert job["result_files"] == [] and job["integrations"] == [] and job["organization_id"] == "default"
    assert job["progress"] == {"step": 0, "total_steps": None, "attempts": 0, "started_at": None}
    assert store.get_job(job["id"]) == job


def test_create_job_needs_existing_files(store):
    with pytest.raises(NotFoundError) as err:
        new_job(store, ids.new_id(ids.FILE))
    assert err.value.param == "training_file"
    with pytest.raises(NotFoundError) as err:
        new_job(store, validation_file="../x")
    assert err.value.param == "validation_file"
    assert store.list_jobs()[0] == []


@pytest.mark.parametrize("start, target", list(itertools.product(JOB_STATUSES, JOB_STATUSES)))
def test_status_transitions(store, start, target):
    job = job_in(store, start)
    error = {"code": "boom", "message": "it broke", "param": None} if target == "failed" else None
    if target in TRANSITIONS[start]:
        after = store.set_status(job["id"], target, error=error)
        assert after["status"] == target
        assert store.get_job(job["id"])["status"] == target
    else:
        with pytest.raises(InvalidTransitionError, match=f"from '{start}' to '{target}'"):
            store.set_status(job["id"], target, error=error)
        assert store.get_job(job["id"]) == job


def test_transition_table_matches_the_documented_lifecycle():
    assert TRANSITIONS == {
        "validating_files": {"queued", "failed", "cancelled"},
        "queued": {"running", "cancelled", "failed"},
        "running": {"succeeded", "failed", "cancelled", "queued"},
        "succeeded": set(), "failed": set(), "cancelled": set(),
    }


def test_timestamps_and_success_fields(store):
    job = job_in(store, "running")
    assert job["progress"]["started_at"] is not None and job["finished_at"] is None
    done = store.set_status(job["id"], "succeeded", trained_tokens=1234)
    assert done["finished_at"] >= done["progress"]["started_at"] >= done["created_at"]
    assert done["trained_tokens"] == 1234
    assert done["fine_tuned_model"] == ids.fine_tuned_model_name(job["id"], None, "base", "default")
    named = store.set_status(job_in(store, "running")["id"], "succeeded", fine_tuned_model="ft-x-1")
    assert named["fine_tuned_model"] == "ft-x-1"


def test_failure_records_the_error(store):
    job = job_in(store, "running")
    failed = store.set_status(job["id"], "failed",
                              error={"code": "invalid_training_file", "message": "line 3: bad",
                                     "param": "training_file"})
    assert failed["error"] == {"code": "invalid_training_file", "message": "line 3: bad",
                               "param": "training_file"}
    assert failed["finished_at"] is not None
    with pytest.raises(ValueError, match="only be recorded with status 'failed'"):
        store.set_status(job_in(store, "running")["id"], "succeeded", error={"code": "x", "message": "y"})
    with pytest.raises(ValueError, match="code"):
        store.set_status(job_in(store, "running")["id"], "failed", error={"message": "y"})
    with pytest.raises(ValueError, match="unknown job status"):
        store.set_status(job["id"], "paused")


def test_unknown_jobs(store):
    missing = ids.new_id(ids.JOB)
    assert store.get_job(missing) is None and store.get_job("../x") is None
    for call in (lambda: store.set_status(missing, "queued"), lambda: store.request_cancel(missing),
                 lambda: store.is_cancelled(missing), lambda: store.update_progress(missing, 1, 1, 2),
                 lambda: store.add_event(missing, "info", "x"), lambda: store.list_events(missing),
                 lambda: store.add_checkpoint(missing, 1, "/p", {}),
                 lambda: store.list_checkpoints(missing), lambda: store.latest_checkpoint("../x")):
        with pytest.raises(NotFoundError):
            call()


@pytest.mark.parametrize("status", ["validating_files", "queued", "running"])
def test_cancel_unfinished_job(store, status):
    job = job_in(store, status)
    assert not store.is_cancelled(job["id"])
    cancelled = store.request_cancel(job["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert store.is_cancelled(job["id"])
    # The worker notices: progress is no longer recorded and it cannot report success.
    assert store.update_progress(job["id"], 10, 1, 5) is False
    with pytest.raises(InvalidTransitionError):
        store.set_status(job["id"], "succeeded")


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_is_refused(store, status):
    job = job_in(store, status)
    with pytest.raises(InvalidTransitionError, match="only unfinished jobs can be cancelled"):
        store.request_cancel(job["id"])
    assert store.get_job(job["id"]) == job


def test_claim_oldest_first_and_exactly_once(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)["id"]
    assert store.claim_next_job() is None
    new_job(store, f)  # still validating: not claimable
    a, b = queued_job(store, f), queued_job(store, f)
    first = store.claim_next_job()
    assert first["id"] == a["id"] and first["status"] == "running"
    assert first["progress"]["attempts"] == 1 and first["progress"]["started_at"] is not None
    assert store.claim_next_job()["id"] == b["id"]
    assert store.claim_next_job() is None


def test_recover_running_jobs_requeues_them_ahead_of_new_ones(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)["id"]
    crashed = queued_job(store, f)
    store.claim_next_job()
    store.update_progress(crashed["id"], trained_tokens=500, step=5, total_steps=20)
    store.add_checkpoint(crashed["id"], 5, "/ckpt/5", {"train_loss": 1.5})
    waiting = queued_job(store, f)
    assert [j["id"] for j in store.recover_running_jobs()] == [crashed["id"]]
    assert store.get_job(crashed["id"])["status"] == "queued"
    assert store.recover_running_jobs() == []
    resumed = store.claim_next_job()
    assert resumed["id"] == crashed["id"]
    assert resumed["progress"]["attempts"] == 2 and resumed["progress"]["step"] == 5
    assert store.latest_checkpoint(resumed["id"])["step_number"] == 5
    assert store.claim_next_job()["id"] == waiting["id"]
    messages = [e["message"] for e in store.list_events(crashed["id"], limit=100)[0]]
    assert any("resumed (attempt 2)" in m for m in messages)
    assert any("worker restarted" in m for m in messages)


def test_update_progress(store):
    job = job_in(store, "running")
    assert store.update_progress(job["id"], trained_tokens=2048, step=3, total_steps=30) is True
    got = store.get_job(job["id"])
    assert got["trained_tokens"] == 2048
    assert got["progress"]["step"] == 3 and got["progress"]["total_steps"] == 30
    assert store.update_progress(job_in(store, "queued")["id"], 1, 1, 1) is False


def test_estimated_finish_is_shown_only_while_running(store):
    job = job_in(store, "running")
    assert store.get_job(job["id"])["estimated_finish"] is None  # no rate measured yet
    store.update_progress(job["id"], 10, 1, 30, estimated_finish=1_900_000_000)
    assert store.get_job(job["id"])["estimated_finish"] == 1_900_000_000
    store.update_progress(job["id"], 20, 2, 30)  # the rate is gone: null again, never stale
    assert store.get_job(job["id"])["estimated_finish"] is None
    store.update_progress(job["id"], 30, 3, 30, estimated_finish=1_900_000_000)
    assert store.set_status(job["id"], "succeeded")["estimated_finish"] is None


def test_result_files_are_recorded_when_a_job_succeeds(store):
    job = job_in(store, "running")
    results = store.create_file("step-metrics.csv", "fine-tune-results", b"step\n")["id"]
    done = store.set_status(job["id"], "succeeded", result_files=[results])
    assert done["result_files"] == [results] == store.get_job(job["id"])["result_files"]


def test_list_jobs_pagination_with_after(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)["id"]
    made = [new_job(store, f)["id"] for _ in range(7)]
    seen, after = [], None
    while True:
        page, has_more = store.list_jobs(after=after, limit=3)
        seen += [j["id"] for j in page]
        if not has_more:
            break
        after = page[-1]["id"]
    assert seen == made[::-1]
    assert store.list_jobs(limit=7)[1] is False and store.list_jobs(limit=6)[1] is True
    assert store.list_jobs(after=made[0]) == ([], False)
    with pytest.raises(NotFoundError):
        store.list_jobs(after=ids.new_id(ids.JOB))


# ----------------------------------------------------------------- events/checkpoints

def test_events(store):
    job = job_in(store, "running")
    ev = store.add_event(job["id"], "info", "step 1", {"step": 1, "train_loss": 2.0}, type="metrics")
    assert ev == {"id": ev["id"], "object": "fine_tuning.job.event", "created_at": ev["created_at"],
                  "level": "info", "message": "step 1", "data": {"step": 1, "train_loss": 2.0},
                  "type": "metrics"}
    events, has_more = store.list_events(job["id"], limit=100)
    assert events[0] == ev and not has_more
    # created, queued, started were logged by the store itself, oldest last
    assert [e["message"] for e in events[1:]] == [
        "Fine-tuning job started", "Files validated, moving job to queued state",
        f"Created fine-tuning job: {job['id']}"]
    with pytest.raises(ValueError, match="level"):
        store.add_event(job["id"], "debug", "x")
    with pytest.raises(ValueError, match="type"):
        store.add_event(job["id"], "info", "x", type="log")


def test_event_pagination_is_per_job(store):
    job, other = job_in(store, "running"), job_in(store, "running")
    made = [store.add_event(job["id"], "info", f"e{i}")["id"] for i in range(5)]
    page, has_more = store.list_events(job["id"], limit=2)
    assert [e["id"] for e in page] == [made[4], made[3]] and has_more
    page, _ = store.list_events(job["id"], after=page[-1]["id"], limit=2)
    assert [e["id"] for e in page] == [made[2], made[1]]
    with pytest.raises(NotFoundError) as err:
        store.list_events(other["id"], after=made[0])
    assert err.value.param == "after"


def test_checkpoints(store):
    job = new_job(store, suffix="bot")
    assert store.latest_checkpoint(job["id"]) is None
    made = [store.add_checkpoint(job["id"], step, f"/ckpt/{step}", {"train_loss": 1.0 / step})
            for step in (10, 20, 30)]
    c = made[0]
    assert c["object"] == "fine_tuning.job.checkpoint" and c["fine_tuning_job_id"] == job["id"]
    assert c["step_number"] == 10 and c["metrics"] == {"train_loss": 0.1, "step": 10}
    assert c["path"] == "/ckpt/10"
    name = ids.fine_tuned_model_name(job["id"], "bot", "base", "default")
    assert c["fine_tuned_model_checkpoint"] == name + ":ckpt-step-10"
    assert ids.is_valid_id(c["id"], ids.CHECKPOINT)
    assert store.latest_checkpoint(job["id"]) == made[-1]
    page, has_more = store.list_checkpoints(job["id"], limit=2)
    assert page == made[:0:-1] and has_more
    assert store.list_checkpoints(job["id"], after=page[-1]["id"]) == ([made[0]], False)


# --------------------------------------------------------------- durability/concurrency

def test_everything_survives_reopening(make_store):
    first = make_store()
    job = job_in(first, "running")
    first.add_checkpoint(job["id"], 1, "/c", {})
    state = (first.list_files(), first.list_jobs(), first.list_events(job["id"], limit=100),
             first.list_checkpoints(job["id"]))
    first.close()
    second = make_store()
    assert (second.list_files(), second.list_jobs(), second.list_events(job["id"], limit=100),
            second.list_checkpoints(job["id"])) == state
    assert second.read_file(job["training_file"]) == DATA


def test_threads_share_one_store(store):
    f = store.create_file("train.jsonl", "fine-tune", DATA)["id"]
    made = {queued_job(store, f)["id"] for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        while (job := store.claim_next_job()) is not None:
            store.add_event(job["id"], "info", "claimed by a thread")
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(made)


def test_stores_claiming_at_the_same_moment_never_take_a_job_twice(make_store):
    """Separate stores (as separate instances have) race for every job, released by a barrier."""
    setup = make_store()
    f = setup.create_file("train.jsonl", "fine-tune", DATA)["id"]
    made = {queued_job(setup, f)["id"] for _ in range(120)}
    stores = [make_store() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    claimed: dict[str, list[str]] = {}

    def claim(owner: str, store: JobStore) -> None:
        mine = claimed.setdefault(owner, [])
        barrier.wait()
        while (job := store.claim_next_job(owner)) is not None:
            assert job["status"] == "running"
            mine.append(job["id"])
            time.sleep(0.002)  # a moment of work, so the others are claiming while this one is not

    threads = [threading.Thread(target=claim, args=(f"instance-{i}", s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [job_id for ids_ in claimed.values() for job_id in ids_]
    assert len(everything) == len(set(everything)), "a job was claimed twice"
    assert set(everything) == made
    assert sum(1 for ids_ in claimed.values() if ids_) > 1, "one store took every job: no race"
    for owner, ids_ in claimed.items():
        for job_id in ids_:
            job = setup.get_job(job_id)
            assert job["progress"]["attempts"] == 1 and setup.lease(job_id).owner == owner
            starts = [e for e in setup.list_events(job_id, limit=100)[0] if e["message"] ==
                      f"Fine-tuning job started on instance {owner}"]
            assert len(starts) == 1


CHILD = r"""
import json, os, sys, time
from harli_sgl.jobs.store import JobStore
store = JobStore(sys.argv[1], db_url=sys.argv[2] or None)
stop = os.path.join(sys.argv[1], "stop")
print("ready", flush=True)
claimed = []
deadline = time.time() + 60
while time.time() < deadline:
    job = store.claim_next_job("child")
    if job is not None:
        claimed.append(job["id"])
        store.add_event(job["id"], "info", "claimed by the child process")
        store.update_progress(job["id"], trained_tokens=1, step=1, total_steps=1, owner="child")
    elif os.path.exists(stop):
        break
print(json.dumps(claimed), flush=True)
store.close()
"""


def test_two_processes_claim_each_job_exactly_once(make_store, db_url):
    """A separate process claims jobs while this one adds (and also claims) them."""
    parent = make_store()
    work = parent.workdir
    f = parent.create_file("train.jsonl", "fine-tune", DATA)["id"]
    env = {**os.environ, "PYTHONPATH": os.path.abspath(PYTHON_DIR)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, work, db_url or ""],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        made, claimed_here = [], []
        for i in range(40):
            made.append(queued_job(parent, f)["id"])
            if i % 3 == 0 and (job := parent.claim_next_job()) is not None:
                claimed_here.append(job["id"])
                parent.add_event(job["id"], "info", "claimed by the parent process")
            time.sleep(0.005)
        while (job := parent.claim_next_job()) is not None:
            claimed_here.append(job["id"])
        open(os.path.join(work, "stop"), "w").close()
        claimed_there = json.loads(child.stdout.readline())
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert claimed_there, "the child process never got a job"
    assert not set(claimed_here) & set(claimed_there)
    assert sorted(claimed_here + claimed_there) == sorted(made)
    for job_id in made:
        job = parent.get_job(job_id)
        assert job["status"] == "running" and job["progress"]["attempts"] == 1
        assert parent.lease(job_id).owner == ("child" if job_id in claimed_there else "local")
