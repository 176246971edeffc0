"""Job-store fixtures: ``make_store`` and ``store`` run on the backend ``db_url`` names.

Any test under test/jobs that takes them runs once on SQLite and once on
PostgreSQL (``db_url`` in test/conftest.py).
"""

from __future__ import annotations

import pytest

from harli_sgl.jobs.store import JobStore


@pytest.fixture
def make_store(tmp_path, db_url):
    """Opens JobStores on this test's backend (default workdir: tmp_path/work); closes them all."""
    made: list[JobStore] = []

    def make(workdir: str | None = None, **kw) -> JobStore:
        made.append(JobStore(workdir or str(tmp_path / "work"), db_url=db_url, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()
