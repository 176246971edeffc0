"""The PostgreSQL backend on a disk that is really full.

The cluster lives on a small tmpfs mounted for the test (mounting needs root,
which the test machines and CI have), which is then filled to the last byte,
so the server meets a real ``ENOSPC`` when a table grows. The store must raise
:class:`StorageFullError` (what the API turns into 507 and the worker waits
out), the server must stay up, and once space is freed writes go through again
with nothing lost.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from harli_sgl.jobs.store import JobStore, StorageFullError
from harli_sgl.tools.postgres import PostgresServer

from store_util import new_job


@pytest.fixture
def server_on_small_disk() -> Iterator[PostgresServer]:
    disk = tempfile.mkdtemp(prefix="harli-pg-disk-")  # reachable by the postgres user
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", disk], check=True)
    server = PostgresServer(os.path.join(disk, "pg"), durable=False)
    try:
        yield server.start()
    finally:
        server.stop()
        subprocess.run(["umount", "-l", disk], check=False)
        os.rmdir(disk)


def fill(disk: str) -> str:
    filler = os.path.join(disk, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_database_disk_raises_storage_full_and_recovers(server_on_small_disk, tmp_path):
    server = server_on_small_disk
    # The files directory is elsewhere: only the database's disk fills up.
    store = JobStore(str(tmp_path / "work"), db_url=server.create_database("jobs"))
    try:
        job = new_job(store)
        filler = fill(os.path.dirname(server.dir))
        written = 0
        with pytest.raises(StorageFullError, match="disk is full"):
            for _ in range(100_000):
                store.add_event(job["id"], "info", "x" * 2000)
                written += 1
        assert server.is_running()
        assert len(store.list_events(job["id"], limit=100_000)[0]) == written + 1  # + "Created"

        os.unlink(filler)
        store.add_event(job["id"], "info", "after the disk was freed")
        assert store.set_status(job["id"], "queued")["status"] == "queued"
        assert store.list_events(job["id"], limit=1)[0][0]["message"].startswith("Files validated")
    finally:
        store.close()
