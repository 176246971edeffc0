"""The job executor on a disk that fills up while a job trains (issue 12, item 4).

Before, SQLite's "database or disk is full" escaped the executor, the worker
exited, was restarted, exited again (7 restarts in 3 minutes) and its job stayed
``running``. Now nothing escapes: store writes and checkpoints wait, training
goes on, and once space is freed everything queued is stored and the job ends
normally. The workdir is a real tmpfs filled to its last block.
"""

from __future__ import annotations

import os

from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.worker.running_job import EventRecord
from harli_sgl.worker import job_lifecycle
from jobs.test_full_disk import fill, integrity, small_disk  # noqa: F401  (fixture)
from worker.test_job_prepare import ROWS, events, make_executor, submit, tick_until


def test_a_full_disk_pauses_store_writes_and_the_job_finishes_once_space_is_freed(
        small_disk, monkeypatch):  # noqa: F811
    monkeypatch.setattr(job_lifecycle, "STORAGE_RETRY_S", 0.05)  # retry at once
    workdir = os.path.join(small_disk, "work")
    ex = make_executor(workdir, checkpoint_every_steps=1)
    try:
        store = ex.store
        job = submit(store, ROWS)  # 2 epochs of 2 steps
        tick_until(ex, lambda: job in ex.running and ex.running[job].trainer is not None)
        ex.flush()
        stored_before = len(events(store, job))
        filler = fill(small_disk)

        # Train to the end on the full disk: no exception leaves the executor.
        slot = 0
        while ex.running[job].trainer is not None and not ex.running[job].trainer.done:
            ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=60_000))
            ex.tick()
            slot += 1
        # Writes run on the writer thread: wait until the last one has failed too.
        tick_until(ex, lambda: ex.running[job].write is None and ex.running[job].finished)
        for _ in range(5):
            ex.tick()
        queued = [r.message for r in ex.running[job].records if isinstance(r, EventRecord)]
        assert any("was not written (the disk is full)" in m for m in queued), queued
        assert ex.running[job].adapter_path is None  # the adapter waits for room too
        assert store.get_job(job)["status"] == "running"
        assert len(events(store, job)) == stored_before  # nothing could be stored

        os.unlink(filler)
        tick_until(ex, lambda: any("adapter saved" in m for m in events(store, job)))
        messages = events(store, job)
        assert any("was not written (the disk is full)" in m for m in messages)
        assert sum("train loss" in m for m in messages) == 4  # every step event kept, in order
        assert not ex.running[job].records
    finally:
        ex.close()
    assert integrity(workdir) == "ok"
