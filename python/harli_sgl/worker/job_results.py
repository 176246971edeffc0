"""Store a finished job's ``fine-tune-results`` file (see :mod:`harli_sgl.jobs.results`).

Run by the job lifecycle once every event of the job is stored and before the
job is published: the CSV is built from the job's metrics events as the store
holds them (so steps trained before a crash and resume are in it too) and
stored as a file of the job's tenant, which lists, retrieves and downloads it
through ``/v1/files`` like any of its files; other tenants cannot see it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harli_sgl.jobs.results import RESULTS_FILENAME, RESULTS_PURPOSE, results_csv

if TYPE_CHECKING:
    from harli_sgl.jobs.store import JobStore

PAGE = 1000


def metrics_events(store: JobStore, job_id: str) -> list[dict]:
    """The ``data`` of the job's metrics events, oldest first."""
    events, after = [], None
    while True:
        page, has_more = store.list_events(job_id, after, PAGE)
        events += page
        if not has_more or not page:
            break
        after = page[-1]["id"]
    return [e["data"] for e in reversed(events) if e["type"] == "metrics" and e["data"]]


def store_results_file(store: JobStore, job_id: str, tenant: str) -> str:
    """Write the job's results CSV as a file of ``tenant``; its file id."""
    data = results_csv(metrics_events(store, job_id))
    return store.create_file(RESULTS_FILENAME, RESULTS_PURPOSE, data, tenant)["id"]
