"""The files and jobs API on a disk that is really full (issue 12, item 4).

The workdir lives on a small tmpfs mounted for the test, which is then filled to
the last byte, so SQLite and the file writes meet a real ``ENOSPC``. The API
must answer an OpenAI-style 507 that names the cause (not a 500), deleting a
file must work and free space, and nothing stored may be damaged.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from harli_sgl.jobs.store import DB_NAME
from jobs.test_router import GOOD, MODEL, Server, multipart

MIB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path) -> Iterator[str]:
    """A 2 MiB tmpfs (mounting needs root, which the test machines and CI have)."""
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: str) -> str:
    """Fill the file system to the last block; returns the filler's path."""
    filler = os.path.join(disk, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def assert_507(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_storage" and error["type"] == "server_error"
    assert "disk is full" in error["message"] and "DELETE /v1/files" in error["message"]


def integrity(workdir: str) -> str:
    with sqlite3.connect(os.path.join(workdir, DB_NAME)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_full_disk_refuses_clearly_and_deletes_free_space(small_disk):
    workdir = os.path.join(small_disk, "work")
    with Server(workdir) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        kept = http.post("/v1/files", **multipart(GOOD)).json()["id"]
        job = http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": kept})
        assert job.status_code == 200, job.text
        spare = [http.post("/v1/files", **multipart(GOOD * 200)).json()["id"] for _ in range(3)]
        fill(small_disk)

        assert_507(http.post("/v1/files", **multipart(GOOD * 200)))
        created = http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": kept,
                                                          "suffix": "x" * 60})
        assert_507(created)
        # Deleting works on the full disk, and what it frees lets an upload through again.
        for file_id in spare:
            deleted = http.delete(f"/v1/files/{file_id}")
            assert deleted.status_code == 200, deleted.text
            assert http.get(f"/v1/files/{file_id}").status_code == 404
        assert http.post("/v1/files", **multipart(GOOD)).status_code == 200
        # A file a live job uses is still refused, full disk or not.
        assert http.delete(f"/v1/files/{kept}").status_code == 409
        assert http.get(f"/v1/files/{kept}/content").content == GOOD
        assert http.get(f"/v1/fine_tuning/jobs/{job.json()['id']}").json()["status"] == "queued"
        leftovers = [n for n in os.listdir(os.path.join(workdir, "files")) if n.endswith(".tmp")]
        assert not leftovers
    assert integrity(workdir) == "ok"
