"""Where an instance's store and artifacts are, from its configuration: one place decides.

``--harli-db`` picks the job store's database (PostgreSQL for a fleet, else SQLite
in the workdir) and ``--harli-shared-dir`` the artifacts' root (else the workdir).
The HTTP process, the worker and the adapter catalog all open them through here,
so no process can disagree with another about where a file or an adapter is.
"""

from __future__ import annotations

from harli_sgl.config import HarliConfig
from harli_sgl.jobs.artifacts import SharedDir
from harli_sgl.jobs.store import JobStore


def artifacts_of(config: HarliConfig) -> SharedDir:
    return SharedDir(config.shared_dir or config.workdir)


def open_store(config: HarliConfig) -> JobStore:
    return JobStore(config.workdir, db_url=config.db, files_dir=artifacts_of(config).path("files"),
                    default_limits=config.tenant_limits)
