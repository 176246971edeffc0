"""The fleet's shared view on both backends: instance heartbeats, where work goes, new adapters."""

from __future__ import annotations

import threading
import time

from harli_sgl.jobs.store import Adapter

from store_util import job_in, queued_job


def test_heartbeats_and_liveness(store):
    row = store.heartbeat_instance("i-b", "http://b:30000", "base", harvest=0.5, room=1)
    assert row["id"] == "i-b" and row["url"] == "http://b:30000" and row["model"] == "base"
    assert row["harvest"] == 0.5 and row["room"] == 1 and abs(row["heartbeat_at"] - time.time()) < 5
    store.heartbeat_instance("i-a", "http://a:30000", "base", harvest=2, room=0)
    assert [i["id"] for i in store.live_instances()] == ["i-a", "i-b"]
    # An upsert: the second heartbeat replaces the first.
    again = store.heartbeat_instance("i-b", "http://b:30001", "base", harvest=0.7, room=3)
    assert again["heartbeat_at"] >= row["heartbeat_at"]
    assert [(i["url"], i["room"]) for i in store.live_instances() if i["id"] == "i-b"] == [
        ("http://b:30001", 3)]
    time.sleep(0.3)
    assert store.live_instances(max_age_s=0.2) == []
    assert len(store.live_instances(max_age_s=60)) == 2
    assert store.remove_instance("i-a") is True and store.remove_instance("i-a") is False
    assert [i["id"] for i in store.live_instances()] == ["i-b"]


def test_work_goes_to_the_live_instance_with_room_and_the_most_harvest(store):
    assert store.best_instance_for_work() is None
    store.heartbeat_instance("full", "http://f", "base", harvest=9.0, room=0)
    store.heartbeat_instance("c", "http://c", "base", harvest=1.0, room=2)
    store.heartbeat_instance("b", "http://b", "base", harvest=3.0, room=1)
    assert store.best_instance_for_work()["id"] == "b"
    store.heartbeat_instance("a", "http://a", "base", harvest=3.0, room=1)
    assert store.best_instance_for_work()["id"] == "a"  # a tie goes to the smallest id
    time.sleep(0.3)
    store.heartbeat_instance("c", "http://c", "base", harvest=1.0, room=2)
    assert store.best_instance_for_work(max_age_s=0.2)["id"] == "c"  # a and b went quiet


def test_adapters_are_listed_in_the_order_jobs_succeeded(store):
    older, newer = job_in(store, "running"), job_in(store, "running")
    job_in(store, "failed")
    assert store.succeeded_adapters() == []
    store.set_status(newer["id"], "succeeded", fine_tuned_model="ft-new")
    store.set_status(older["id"], "succeeded")
    adapters = store.succeeded_adapters()
    assert adapters == [Adapter(1, "ft-new", newer["id"]),
                        Adapter(2, store.get_job(older["id"])["fine_tuned_model"], older["id"])]
    assert store.succeeded_adapters(after_seq=1) == adapters[1:]
    assert store.succeeded_adapters(after_seq=2) == []


def test_a_poller_never_misses_an_adapter_while_jobs_succeed_concurrently(make_store):
    """Writers on separate stores finish jobs at once; a poller that only asks for what is
    after the last number it saw must still see every adapter, numbered without gaps."""
    setup = make_store()
    writers = [make_store() for _ in range(3)]
    per_writer = 12
    for _ in range(per_writer * len(writers)):
        queued_job(setup)
    finished = threading.Event()
    seen: list[Adapter] = []

    def poll(store) -> None:
        last = 0
        while True:
            done = finished.is_set()  # read before the poll, so the last poll sees everything
            for adapter in store.succeeded_adapters(after_seq=last):
                seen.append(adapter)
                last = adapter.seq
            if done:
                return

    def write(i: int, store) -> None:
        for _ in range(per_writer):
            job = store.claim_next_job(f"w{i}")
            store.set_status(job["id"], "succeeded", owner=f"w{i}")

    poller = threading.Thread(target=poll, args=(make_store(),))
    poller.start()
    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished.set()
    poller.join()
    total = per_writer * len(writers)
    assert [a.seq for a in seen] == list(range(1, total + 1))
    assert len({a.job_id for a in seen}) == total


def test_listen_adapters_wakes_when_a_job_succeeds(make_store, db_url):
    listener, writer = make_store(), make_store()
    job = job_in(writer, "running")
    if db_url is None:  # SQLite: one instance, nobody to hear from; it only waits
        start = time.monotonic()
        assert listener.listen_adapters(0.2) == []
        assert time.monotonic() - start >= 0.2
        return
    assert listener.listen_adapters(0.05) == []  # starts listening
    # The notification arrives with the commit and waits in the listening connection.
    writer.set_status(job["id"], "succeeded", fine_tuned_model="ft-heard")
    start = time.monotonic()
    assert listener.listen_adapters(10) == ["ft-heard"]
    assert time.monotonic() - start < 5
    assert listener.succeeded_adapters() == [Adapter(1, "ft-heard", job["id"])]
