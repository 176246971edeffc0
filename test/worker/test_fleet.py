"""FleetMember over a real store (SQLite, then PostgreSQL): heartbeat, leases, placement."""

from __future__ import annotations

from harli_sgl.jobs.store import JobStore
from harli_sgl.worker.fleet import PLACEMENT_GRACE_S, FleetMember

from store_util import queued_job


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def member(store, name, clock, lease_s=30.0) -> FleetMember:
    return FleetMember(store, name, f"http://{name}", "base", lease_s, clock=clock)


def test_the_heartbeat_publishes_harvest_per_new_job_and_room(tmp_path, db_url):
    store = JobStore(str(tmp_path), db_url=db_url)
    a = member(store, "a", Clock())
    a.set_free_compute(900.0)
    assert a.beat_due()
    assert a.beat(running=[], room=3) == []
    row = {r["id"]: r for r in store.live_instances()}["a"]
    assert row["harvest"] == 900.0 and row["room"] == 3 and row["url"] == "http://a"
    assert not a.beat_due()
    running = [store.claim_next_job("a")["id"] for _ in (queued_job(store), queued_job(store))]
    assert a.beat(running, room=1) == []  # both leases renewed
    row = {r["id"]: r for r in store.live_instances()}["a"]
    assert row["harvest"] == 300.0 and row["room"] == 1  # a third job would get a third


def test_a_lost_lease_is_reported_and_an_expired_one_requeued(tmp_path, db_url):
    store = JobStore(str(tmp_path), db_url=db_url)
    clock = Clock()
    a, b = member(store, "a", clock, lease_s=0.2), member(store, "b", clock, lease_s=30.0)
    job = queued_job(store)
    assert store.claim_next_job("a", 0.2)["id"] == job["id"]
    assert a.beat([job["id"]], room=0) == []  # renewed: still a's
    import time

    time.sleep(0.5)  # a stalls past its lease (the database's clock)
    b.beat([], room=1)  # b re-queues the expired job...
    assert store.get_job(job["id"])["status"] == "queued"
    assert store.claim_next_job("b", 30.0)["id"] == job["id"]  # ...and takes it over
    clock.t += 1.0
    assert a.beat([job["id"]], room=0) == [job["id"]]  # a learns it lost the job


def test_only_the_instance_with_the_most_harvest_claims_at_once(tmp_path, db_url):
    store = JobStore(str(tmp_path), db_url=db_url)
    clock = Clock()
    a, b = member(store, "a", clock), member(store, "b", clock)
    a.set_free_compute(100.0)
    b.set_free_compute(500.0)
    a.beat([], room=4)
    b.beat([], room=4)
    assert b.may_claim(running=0, room=4)
    assert not a.may_claim(running=0, room=4)  # b is better placed: a waits its grace period
    clock.t += PLACEMENT_GRACE_S / 2
    assert not a.may_claim(running=0, room=4)
    clock.t += PLACEMENT_GRACE_S
    assert a.may_claim(running=0, room=4)  # b did not take the work in time: a may
    a.claimed(None)
    assert not a.may_claim(running=0, room=4)  # the grace period starts over
    b.beat([], room=0)  # b is full: a is the best instance with room
    assert a.may_claim(running=0, room=4)
    assert not a.may_claim(running=0, room=0)  # a full instance never claims


def test_a_burst_of_jobs_spreads_over_equal_instances(tmp_path, db_url):
    store = JobStore(str(tmp_path), db_url=db_url)
    clock = Clock()
    a, b = member(store, "a", clock), member(store, "b", clock)
    for m in (a, b):
        m.set_free_compute(600.0)
        m.beat([], room=4)
    assert a.may_claim(running=0, room=4)  # equal: a claims its first job ...
    assert not a.may_claim(running=1, room=3)  # ... but not a second while b offers more
    assert b.may_claim(running=0, room=4)


def test_a_job_that_no_longer_exists_counts_as_lost(tmp_path):
    a = member(JobStore(str(tmp_path)), "a", Clock())
    assert a.beat(["ftjob-doesnotexist"], room=1) == ["ftjob-doesnotexist"]


def test_harvests_within_the_band_count_as_equal_and_room_decides(tmp_path, db_url):
    """A burst of four jobs on two instances whose measured harvests differ by noise
    (within the band) splits two and two, as each instance publishes its row after a
    claim; a clearly better instance still takes more."""
    from harli_sgl.worker.fleet import PLACEMENT_BAND

    store = JobStore(str(tmp_path), db_url=db_url)
    clock = Clock()
    a, b = member(store, "a", clock), member(store, "b", clock)
    a.set_free_compute(600.0)
    b.set_free_compute(600.0 / (PLACEMENT_BAND * 1.2))  # b measured slower by chance
    for m in (a, b):
        m.beat([], room=4)
    placed = {"a": 0, "b": 0}
    for _ in range(4):
        for name, m in (("a", a), ("b", b)):
            if m.may_claim(running=placed[name], room=4 - placed[name]):
                placed[name] += 1
                m.publish(placed[name], 4 - placed[name])
                break
    assert placed == {"a": 2, "b": 2}, placed
    # Without the row published after each claim, a would look as empty as before.
    assert {r["id"]: r["room"] for r in store.live_instances()} == {"a": 2, "b": 2}
    # Harvest beyond the band still wins: c is 4x faster than d and takes the first two.
    c, d = member(store, "c", clock), member(store, "d", clock)
    c.set_free_compute(1200.0)
    d.set_free_compute(300.0)
    a.beat([], room=0)
    b.beat([], room=0)
    for m in (c, d):
        m.beat([], room=4)
    assert c.may_claim(running=0, room=4) and not d.may_claim(running=0, room=4)
    c.publish(1, 3)  # 600 for one more job: still beyond the band over 300
    assert c.may_claim(running=1, room=3) and not d.may_claim(running=0, room=4)
    c.publish(2, 2)  # 400 vs 300: within the band, and d has more room
    assert not c.may_claim(running=2, room=2) and d.may_claim(running=0, room=4)
