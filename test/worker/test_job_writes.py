"""Checkpoints and adapters are written off the worker's loop (issue 12, item 2).

A real :class:`JobExecutor` (tiny model, real JobStore) driven the way the
worker loop drives it, with every write slowed by the slow-disk fixture
(test/faults/slow_disk.py): the files are written into the temporary directory, then the
writer waits before the rename. While it waits, the loop's ``tick`` must return
at once, another job must train, the job's next checkpoint must be deferred,
and the store must not name the checkpoint; once the rename is done the row
appears and names a complete directory. Before, ``tick`` wrote on the loop and
took the whole delay.
"""

from __future__ import annotations

import glob
import os
import time

from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.core.trainer.checkpoint import read_state
from harli_sgl.jobs.store import JobStore
from faults import slow_disk
from worker.test_job_prepare import ROWS, events, make_executor, submit, tick_until

DELAY_S = 3.0
FILES = {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "state.json"}


def timed_tick(ex) -> float:
    start = time.monotonic()
    ex.tick()
    return time.monotonic() - start


def slot(ex, n: int) -> object:
    return ex.run_slot(SlotGrant(n, budget_units=1 << 40, budget_ms=60_000))


def rows(store: JobStore, job_id: str) -> list[dict]:
    return store.list_checkpoints(job_id, limit=100)[0]


def test_a_slow_checkpoint_write_blocks_neither_the_loop_nor_another_job(tmp_path, monkeypatch):
    slow_disk.slow_down(monkeypatch, DELAY_S)
    ex = make_executor(str(tmp_path), checkpoint_every_steps=1)
    try:
        store = ex.store
        a, b = submit(store, ROWS), submit(store, ROWS)  # 4 steps each, a checkpoint per step
        tick_until(ex, lambda: all(j in ex.running and ex.running[j].trainer is not None
                                   for j in (a, b)))

        assert slot(ex, 0).job_id == a  # one step, which is due for a checkpoint
        assert timed_tick(ex) < DELAY_S / 3  # snapshot taken, write handed off
        write = ex.running[a].write
        assert write is not None and write.checkpoint.step == 1
        target = write.path
        # The files land in the temporary directory; the rename waits for the slow disk.
        pending = os.path.join(os.path.dirname(target), f".tmp-{os.path.basename(target)}-*")
        tick_until(ex, lambda: any(set(os.listdir(d)) == FILES for d in glob.glob(pending)))
        assert not write.future.done() and not os.path.exists(target)

        # Meanwhile the loop answers at once, the other job trains, and so does this one:
        # its next checkpoint is deferred, with an event saying why.
        report = slot(ex, 1)
        assert report.job_id == b and report.units > 0
        assert timed_tick(ex) < DELAY_S / 3
        report = slot(ex, 2)
        assert report.job_id == a and report.units > 0
        assert timed_tick(ex) < DELAY_S / 3
        assert not write.future.done()  # all of that happened during the write
        ex.flush()
        assert rows(store, a) == []  # nothing recorded before the rename
        assert any("checkpoint at step 2 is deferred" in m and "step 1 is still being written"
                   in m for m in events(store, a))

        tick_until(ex, lambda: rows(store, a))
        (row,) = rows(store, a)
        assert row["step_number"] == 1 and row["path"] == target and "train_loss" in row["metrics"]
        assert set(os.listdir(target)) == FILES and read_state(target)["completed_steps"] == 1
        assert not glob.glob(pending)

        # The deferred checkpoint comes at the next step boundary.
        assert slot(ex, 3).job_id == b
        ex.tick()
        assert slot(ex, 4).job_id == a
        ex.tick()
        assert ex.running[a].write.checkpoint.step == 3
    finally:
        ex.close()


def test_a_job_succeeds_only_once_its_slowly_written_adapter_is_complete(tmp_path, monkeypatch):
    slow_disk.slow_down(monkeypatch, DELAY_S)
    ex = make_executor(str(tmp_path))  # no checkpoints: only the final adapter is written
    try:
        store = ex.store
        job = submit(store, ROWS)
        tick_until(ex, lambda: job in ex.running and ex.running[job].trainer is not None)
        n = 0
        while ex.has_work():
            slot(ex, n)
            assert timed_tick(ex) < DELAY_S / 3
            n += 1
        entry = ex.running[job]
        # Trained: the LoRA layers are gone from the shared model, the adapter is being written.
        assert entry.trainer is None and entry.finished is not None
        assert not entry.write.future.done() and not os.path.exists(entry.write.path)
        ex.flush()
        assert not any("adapter saved" in m for m in events(store, job))
        assert entry.adapter_path is None and entry.publishing is None

        tick_until(ex, lambda: entry.adapter_path is not None)
        assert {"adapter_model.safetensors", "adapter_config.json"} <= \
            set(os.listdir(entry.adapter_path))
        tick_until(ex, lambda: any("adapter saved" in m for m in events(store, job)))
        assert store.get_job(job)["status"] == "running"  # nothing serves it: not succeeded
    finally:
        ex.close()
