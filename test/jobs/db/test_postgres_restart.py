"""A store outlives a PostgreSQL restart: broken pooled connections are replaced, not used."""

from __future__ import annotations

import shutil
import tempfile

from harli_sgl.jobs.store import JobStore
from harli_sgl.tools.postgres import PostgresServer

from store_util import new_job


def test_writes_go_through_after_the_server_restarts(tmp_path):
    server = PostgresServer(tempfile.mkdtemp(prefix="harli-pg-restart-"), durable=False).start()
    try:
        url = server.create_database("jobs")
        store = JobStore(str(tmp_path), db_url=url)
        before = new_job(store)
        server.stop()
        server.start()  # same directory: same port, same data
        after = new_job(store)  # on a pooled connection the restart broke
        assert {j["id"] for j in store.list_jobs(limit=10)[0]} == {before["id"], after["id"]}
        store.close()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
