"""Tenants in the store, on both backends: ownership of every object, quotas, fair claims, shares."""

from __future__ import annotations

import os
import threading

import pytest

from harli_sgl.jobs import ids
from harli_sgl.jobs.store import InvalidTransitionError, NotFoundError, QuotaExceededError
from harli_sgl.jobs.store.quota import check_stored_bytes
from harli_sgl.jobs.tenants import Limits

from store_util import DATA, new_job


def test_every_object_is_seen_only_by_its_tenant(store):
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    job = new_job(store, f["id"], tenant="alpha")
    store.set_status(job["id"], "queued")
    store.add_checkpoint(job["id"], 1, "/ckpt/1")
    assert job["organization_id"] == "alpha"
    # Its own tenant sees everything...
    assert store.get_file(f["id"], "alpha") == f and store.read_file(f["id"], "alpha") == DATA
    assert [x["id"] for x in store.list_files(tenant="alpha")] == [f["id"]]
    assert store.get_job(job["id"], "alpha")["id"] == job["id"]
    assert [j["id"] for j in store.list_jobs(tenant="alpha")[0]] == [job["id"]]
    assert store.list_events(job["id"], tenant="alpha")[0]
    assert store.list_checkpoints(job["id"], tenant="alpha")[0]
    assert store.job_status_counts("alpha")["queued"] == 1
    # ...another sees nothing, exactly as if it did not exist.
    assert store.get_file(f["id"], "beta") is None and store.list_files(tenant="beta") == []
    with pytest.raises(NotFoundError):
        store.read_file(f["id"], "beta")
    assert store.get_job(job["id"], "beta") is None and store.list_jobs(tenant="beta")[0] == []
    for call in (store.list_events, store.list_checkpoints, store.request_cancel):
        with pytest.raises(NotFoundError, match="No such fine-tuning job"):
            call(job["id"], tenant="beta")
    with pytest.raises(NotFoundError):  # the cursor of another tenant's list is no cursor
        store.list_files(tenant="beta", after=f["id"])
    assert store.job_status_counts("beta")["queued"] == 0
    assert not store.delete_file(f["id"], "beta") and store.get_file(f["id"]) is not None
    # A job may only train on its own tenant's files.
    with pytest.raises(NotFoundError) as err:
        new_job(store, f["id"], tenant="beta")
    assert err.value.param == "training_file"
    # Events and checkpoints carry the tenant too.
    with store._db.read() as tx:
        assert {r["tenant"] for r in tx.all("SELECT tenant FROM events")} == {"alpha"}
        assert {r["tenant"] for r in tx.all("SELECT tenant FROM checkpoints")} == {"alpha"}
    # The owner can cancel; the worker (no tenant) sees all.
    assert store.request_cancel(job["id"], tenant="alpha")["status"] == "cancelled"
    assert store.get_job(job["id"])["status"] == "cancelled"
    assert store.delete_file(f["id"], "alpha")


def test_stored_bytes_quota_refuses_and_names_the_limit(make_store):
    store = make_store(default_limits=Limits(max_stored_bytes=3 * len(DATA)))
    for _ in range(3):
        store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    with pytest.raises(QuotaExceededError, match="max_stored_bytes") as err:
        store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    assert err.value.limit == "max_stored_bytes" and err.value.value == 3 * len(DATA)
    assert len(store.list_files(tenant="alpha")) == 3 and len(os.listdir(store.files_dir)) == 3
    store.create_file("b.jsonl", "fine-tune", DATA, tenant="beta")  # quotas are per tenant
    # An admin's limit for one tenant wins over the default; None fields keep the default.
    store.set_limits("alpha", Limits(max_stored_bytes=4 * len(DATA)))
    store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    assert store.get_tenant("alpha")["usage"]["stored_bytes"] == 4 * len(DATA)
    store.set_limits("beta", Limits(max_queued_jobs=9))
    assert store.get_tenant("beta")["effective_limits"] == {
        "max_running_jobs": None, "max_queued_jobs": 9, "max_stored_bytes": 3 * len(DATA)}
    # Deleting frees quota.
    f = store.list_files(tenant="alpha")[0]
    assert store.delete_file(f["id"], "alpha")
    store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")


def test_uploads_at_the_same_moment_cannot_both_pass_the_quota(make_store):
    store = make_store(default_limits=Limits(max_stored_bytes=5 * len(DATA)))
    barrier, outcomes = threading.Barrier(8), []

    def upload() -> None:
        barrier.wait()
        try:
            store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
            outcomes.append("stored")
        except QuotaExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["stored"] * 5
    assert store.get_tenant("alpha")["usage"]["stored_bytes"] == 5 * len(DATA)


def test_a_quota_check_holds_the_tenant_until_its_write_commits(make_store):
    """The check and the write it guards are one step for other writers of the same tenant
    (a row lock on PostgreSQL, the database lock on SQLite): an upload that starts while
    another is between its check and its commit waits for it, then counts it."""
    limits = Limits(max_stored_bytes=len(DATA))
    store, other = make_store(default_limits=limits), make_store(default_limits=limits)
    store.set_limits("alpha", Limits())  # the tenant's row exists (a new row would lock alone)
    outcome: list[str] = []

    def upload() -> None:
        try:
            other.create_file("b.jsonl", "fine-tune", DATA, tenant="alpha")
            outcome.append("stored")
        except QuotaExceededError:
            outcome.append("refused")

    with store._db.write() as tx:
        check_stored_bytes(tx, "alpha", len(DATA), limits)
        racer = threading.Thread(target=upload)
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # waiting for this transaction
        tx.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, tenant) "
                   "VALUES (?, 'a.jsonl', 'fine-tune', ?, 0, 'alpha')",
                   (ids.new_id(ids.FILE), len(DATA)))
    racer.join(timeout=60)
    assert outcome == ["refused"]


def test_queued_jobs_quota(make_store):
    store = make_store(default_limits=Limits(max_queued_jobs=2))
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    first, _ = (new_job(store, f["id"], tenant="alpha") for _ in range(2))
    with pytest.raises(QuotaExceededError, match="max_queued_jobs is 2"):
        new_job(store, f["id"], tenant="alpha")
    store.set_status(first["id"], "queued")
    store.claim_next_job()  # running jobs do not wait: room for one more
    new_job(store, f["id"], tenant="alpha")
    assert store.get_tenant("alpha")["usage"] == {"running_jobs": 1, "queued_jobs": 2,
                                                  "stored_bytes": len(DATA)}


def queue(store, tenant: str, n: int) -> list[str]:
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant=tenant)
    return [store.set_status(new_job(store, f["id"], tenant=tenant)["id"], "queued")["id"]
            for _ in range(n)]


def test_claims_alternate_between_tenants_and_respect_running_quotas(store):
    a = queue(store, "alpha", 4)  # queued first: first come, first served would take all four
    b = queue(store, "beta", 2)
    claimed = [store.claim_next_job()["id"] for _ in range(4)]
    assert claimed == [a[0], b[0], a[1], b[1]]
    store.set_limits("alpha", Limits(max_running_jobs=2))
    assert store.claim_next_job() is None  # alpha is at its limit, beta has nothing queued
    store.set_status(a[0], "succeeded")
    assert store.claim_next_job()["id"] == a[2]
    assert store.get_job(a[3])["status"] == "queued"


def test_a_resumed_job_still_comes_first(store):
    a = queue(store, "alpha", 1)
    b = queue(store, "beta", 1)
    store.claim_next_job()
    assert [j["id"] for j in store.recover_running_jobs()] == a
    assert store.claim_next_job()["id"] == a[0] and store.claim_next_job()["id"] == b[0]


def test_adapter_access_owner_shares_and_the_operators_adapters(store):
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    job = store.set_status(new_job(store, f["id"], tenant="alpha")["id"], "queued")
    store.claim_next_job()
    name = store.set_status(job["id"], "succeeded")["fine_tuned_model"]
    assert name.startswith("ft:base:alpha::")
    access = store.adapter_access
    assert access("alpha", name).allows("alpha", served_without_job=True)
    assert not access("beta", name).allows("beta", served_without_job=True)
    # An adapter no job made (loaded by the operator) is the default tenant's.
    assert access("default", "operators").allows("default", served_without_job=True)
    assert not access("alpha", "operators").allows("alpha", served_without_job=True)
    assert not access("default", "nothing").allows("default", served_without_job=False)
    assert store.visible_adapters("beta", [name, "operators"]) == []
    store.share_adapter(name, "beta")
    store.share_adapter(name, "beta")  # once is enough
    store.share_adapter("operators", "*")
    assert access("beta", name).allows("beta", served_without_job=True)
    assert not access("gamma", name).allows("gamma", served_without_job=True)
    assert store.visible_adapters("beta", [name, "operators"]) == [name, "operators"]
    assert store.visible_adapters("gamma", [name, "operators"]) == ["operators"]
    assert [s["tenant"] for s in store.list_shares(name)] == ["beta"]
    assert store.unshare_adapter(name, "beta") and not store.unshare_adapter(name, "beta")
    assert not access("beta", name).allows("beta", served_without_job=True)
    with pytest.raises(ValueError, match="tenant id"):
        store.share_adapter(name, "Not A Tenant")


def test_cancel_of_a_finished_job_of_ones_own_is_still_refused(store):
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    job = new_job(store, f["id"], tenant="alpha")
    store.set_status(job["id"], "failed", error={"code": "x", "message": "y"})
    with pytest.raises(InvalidTransitionError):
        store.request_cancel(job["id"], tenant="alpha")


def test_a_checkpoint_is_named_and_owned_like_its_jobs_adapter(store):
    f = store.create_file("a.jsonl", "fine-tune", DATA, tenant="alpha")
    job = store.set_status(new_job(store, f["id"], tenant="alpha", suffix="cp")["id"], "queued")
    other = store.set_status(new_job(store, store.create_file(
        "b.jsonl", "fine-tune", DATA, tenant="beta")["id"], tenant="beta")["id"], "queued")
    store.claim_next_job(), store.claim_next_job()
    store.add_checkpoint(job["id"], 1, "/ckpt/old-1")
    store.add_checkpoint(job["id"], 1, "/ckpt/1")  # resumed and written again: the newest counts
    store.add_checkpoint(job["id"], 2, "/ckpt/2")
    store.add_checkpoint(other["id"], 1, "/ckpt/beta-1")
    # Servable while the job still runs: its name is the one the checkpoints API shows.
    listed = {c["step_number"]: c["fine_tuned_model_checkpoint"]
              for c in store.list_checkpoints(job["id"], tenant="alpha")[0]}
    found = store.checkpoint_named(listed[1])
    assert found is not None and (found.job_id, found.tenant, found.step, found.path) == (
        job["id"], "alpha", 1, "/ckpt/1")
    assert store.checkpoint_named(listed[2]).path == "/ckpt/2"
    # A near miss names nothing: another step, another tenant's or suffix's name for the job.
    assert store.checkpoint_named(listed[1].replace("step-1", "step-3")) is None
    assert store.checkpoint_named(listed[1].replace(":alpha:", ":beta:")) is None
    assert store.checkpoint_named(listed[1].replace(":cp:", ":xx:")) is None
    assert store.checkpoint_named("ft:base:alpha:cp") is None
    # Once the job succeeds the name is still that of its adapter.
    name = store.set_status(job["id"], "succeeded")["fine_tuned_model"]
    assert listed[2] == ids.checkpoint_model_name(name, 2)
    assert store.checkpoint_named(listed[2]).path == "/ckpt/2"
    # Ownership: alpha's, nobody else's until an admin shares that name.
    access = store.adapter_access
    assert access("alpha", listed[1]).allows("alpha", served_without_job=True)
    assert not access("beta", listed[1]).allows("beta", served_without_job=True)
    beta_ckpt = store.list_checkpoints(other["id"], tenant="beta")[0][0]["fine_tuned_model_checkpoint"]
    assert not access("alpha", beta_ckpt).allows("alpha", served_without_job=True)
    assert store.visible_adapters("alpha", [listed[1], beta_ckpt]) == [listed[1]]
    assert store.visible_adapters("beta", [listed[1], beta_ckpt]) == [beta_ckpt]
    store.share_adapter(listed[1], "beta")
    assert access("beta", listed[1]).allows("beta", served_without_job=True)
    assert not access("beta", listed[2]).allows("beta", served_without_job=True)


def test_a_tenant_that_took_every_place_gives_one_back_to_a_waiting_tenant(store):
    a = queue(store, "alpha", 4)
    for job_id in a:
        assert store.claim_next_job("w1")["id"] == job_id  # nobody else waits: all four
    assert store.preempt_for_fair_share(a[0], "w1") is None  # nobody waits yet
    b = queue(store, "beta", 2)
    assert store.preempt_for_fair_share(a[0], "other-owner") is None  # not that owner's job
    assert store.preempt_for_fair_share(a[0], "w1") == "beta"
    job = store.get_job(a[0])
    # Not counted as an attempt (attempts past MAX_ATTEMPTS fail a job as crashing its worker).
    assert job["status"] == "queued" and job["progress"]["attempts"] == 0
    # The place goes to beta, not back to alpha's preempted job.
    assert store.claim_next_job("w1")["id"] == b[0]
    # 3 and 1, beta still waiting: one more; then 2 and 2, which is fair: no more.
    assert store.preempt_for_fair_share(a[1], "w1") == "beta"
    assert store.claim_next_job("w1")["id"] == b[1]
    assert store.preempt_for_fair_share(a[2], "w1") is None
    assert store.preempt_for_fair_share(b[0], "w1") is None  # alpha waits, but has more
    events = store.list_events(a[0])[0]
    assert any("fair share" in e["message"] for e in events)
    # A tenant at its own running limit is not waiting: nothing is preempted for it.
    c = queue(store, "gamma", 1)
    store.set_limits("gamma", Limits(max_running_jobs=0))
    assert store.preempt_for_fair_share(a[2], "w1") is None
    assert store.get_job(c[0])["status"] == "queued"
    # Alpha's preempted job runs again once beta's end, its one earlier run not counted.
    store.set_status(b[0], "succeeded")
    assert store.claim_next_job("w1")["id"] == a[0]
    assert store.get_job(a[0])["progress"]["attempts"] == 1


def test_two_running_and_one_stay_as_they_are(store):
    # Moving a place from 2 to 1 would only swap the shares: not preempted.
    a = queue(store, "alpha", 2)
    b = queue(store, "beta", 2)
    claimed = [store.claim_next_job("w1")["id"] for _ in range(3)]
    assert sorted(claimed) == sorted([a[0], a[1], b[0]])  # beta's second waits
    assert store.get_job(b[1])["status"] == "queued"
    assert store.preempt_for_fair_share(a[0], "w1") is None
    assert store.preempt_for_fair_share(a[1], "w1") is None
