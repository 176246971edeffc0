"""Leases on both backends: claim, renew, expiry and re-queue, a stale owner's writes, recovery."""

from __future__ import annotations

import time

import pytest

from harli_sgl.jobs.store import InvalidTransitionError, Lease, LeaseLostError

from store_util import job_in, queued_job

SHORT = 0.3  # seconds: a lease that runs out within the test


def test_claim_takes_a_lease_on_the_database_clock(store):
    job = queued_job(store)
    claimed = store.claim_next_job("a", lease_s=60)
    lease = store.lease(job["id"])
    assert claimed["id"] == job["id"] and lease.owner == "a"
    # Within a few seconds of this host's clock (the test server runs here, so they agree).
    assert abs(lease.expires_at - (time.time() + 60)) < 5
    started = store.list_events(job["id"])[0][0]
    assert started["message"] == "Fine-tuning job started on instance a"
    assert started["data"] == {"status": "running", "previous_status": "queued", "lease_owner": "a"}


def test_renew_extends_only_the_holders_lease(store):
    job = queued_job(store)
    store.claim_next_job("a", lease_s=SHORT)
    before = store.lease(job["id"]).expires_at
    assert store.renew_lease(job["id"], "a", 60) is True
    assert store.lease(job["id"]).expires_at > before + 30
    assert store.renew_lease(job["id"], "b", 60) is False
    time.sleep(SHORT + 0.1)
    assert store.requeue_expired_leases() == []  # renewed: still a's
    assert store.get_job(job["id"])["status"] == "running"


def test_an_expired_lease_is_requeued_and_the_stale_owner_can_write_nothing(store):
    job = queued_job(store)
    store.claim_next_job("a", lease_s=SHORT)
    store.update_progress(job["id"], 100, 1, 10, owner="a")
    store.add_checkpoint(job["id"], 1, "/a/ckpt-1", owner="a")
    assert store.requeue_expired_leases() == []  # not yet
    time.sleep(SHORT + 0.1)

    requeued = store.requeue_expired_leases()
    assert [j["id"] for j in requeued] == [job["id"]] and requeued[0]["status"] == "queued"
    assert store.lease(job["id"]) == Lease(None, None)
    warn = store.list_events(job["id"])[0][0]
    assert warn["level"] == "warn" and "'a'" in warn["message"] and "expired" in warn["message"]
    assert warn["data"]["lease_owner"] == "a"
    assert store.requeue_expired_leases() == []

    # Instance b takes it over; a wakes up from its stall and tries to carry on.
    taken = store.claim_next_job("b", lease_s=60)
    assert taken["id"] == job["id"] and taken["progress"]["attempts"] == 2
    assert store.renew_lease(job["id"], "a", 60) is False
    before = store.get_job(job["id"])
    with pytest.raises(LeaseLostError, match="'a' lost the lease.*leased by 'b'"):
        store.update_progress(job["id"], 999, 9, 10, owner="a")
    with pytest.raises(LeaseLostError):
        store.add_checkpoint(job["id"], 9, "/a/ckpt-9", owner="a")
    for status in ("succeeded", "failed", "queued"):
        error = {"code": "x", "message": "y"} if status == "failed" else None
        with pytest.raises(LeaseLostError):
            store.set_status(job["id"], status, error=error, owner="a")
    assert store.get_job(job["id"]) == before
    assert store.latest_checkpoint(job["id"])["path"] == "/a/ckpt-1"
    assert store.lease(job["id"]).owner == "b"

    # b's own writes go through, and finishing clears the lease.
    assert store.update_progress(job["id"], 200, 2, 10, owner="b") is True
    store.add_checkpoint(job["id"], 2, "/b/ckpt-2", owner="b")
    done = store.set_status(job["id"], "succeeded", owner="b")
    assert done["status"] == "succeeded" and done["trained_tokens"] == 200
    assert store.lease(job["id"]) == Lease(None, None)


@pytest.mark.parametrize("leave", ["succeeded", "failed", "queued", "cancelled"])
def test_leaving_running_clears_the_lease(store, leave):
    job = job_in(store, "running")
    assert store.lease(job["id"]).owner == "local"
    if leave == "cancelled":
        store.request_cancel(job["id"])
    else:
        error = {"code": "x", "message": "y"} if leave == "failed" else None
        store.set_status(job["id"], leave, error=error, owner="local")
    assert store.lease(job["id"]) == Lease(None, None)


def test_a_cancelled_job_refuses_its_owner_and_still_answers_false_without_one(store):
    job = queued_job(store)
    store.claim_next_job("a")
    store.request_cancel(job["id"])
    with pytest.raises(LeaseLostError, match="cancelled"):
        store.update_progress(job["id"], 1, 1, 1, owner="a")
    assert store.update_progress(job["id"], 1, 1, 1) is False  # the unguarded form, as before
    with pytest.raises(InvalidTransitionError):
        store.set_status(job["id"], "succeeded")


def test_recover_requeues_only_the_callers_jobs(store):
    """(Jobs left running without an owner by a version-1 store: test_migrations.py.)"""
    mine, theirs, mine_too = (queued_job(store) for _ in range(3))
    store.claim_next_job("a")
    store.claim_next_job("b")
    store.claim_next_job("a")
    assert [j["id"] for j in store.recover_running_jobs("a")] == [mine["id"], mine_too["id"]]
    assert store.get_job(theirs["id"])["status"] == "running"
    assert store.lease(theirs["id"]).owner == "b" and store.lease(mine["id"]) == Lease(None, None)
    assert store.recover_running_jobs("a") == []
    # The re-queued jobs are handed out before never-started ones, oldest first.
    queued_job(store)
    assert store.claim_next_job("c")["id"] == mine["id"]
    assert store.claim_next_job("c")["id"] == mine_too["id"]


def test_leases_of_unknown_jobs(store):
    with pytest.raises(LookupError):
        store.renew_lease("ftjob-" + "0" * 24, "a")
    with pytest.raises(LookupError):
        store.lease("../x")
