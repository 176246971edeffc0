"""Bring a job-store database to :data:`~harli_sgl.jobs.schema.SCHEMA_VERSION`, once, whoever asks.

Every process that opens a store calls :func:`migrate`; many may do so at the
same moment (the HTTP process and its worker on one workdir, every instance of
a fleet on one PostgreSQL database). The version check and every step run in
one transaction that holds the backend's migration lock (SQLite's write lock,
a PostgreSQL advisory lock), so exactly one of them upgrades and the others,
once they get the lock, find the work done. Both backends roll DDL back with
the transaction, so a step that fails leaves the previous version intact.
"""

from __future__ import annotations

from harli_sgl.jobs.db.base import Database
from harli_sgl.jobs.schema import MIGRATIONS, SCHEMA_VERSION, SchemaVersionError, statements


def migrate(db: Database) -> int:
    """Upgrade ``db`` in place; the version it had (0: it was empty)."""
    with db.migration() as tx:
        found = db.schema_version(tx)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(f"{db.where} has schema version {found}; this harli_sgl "
                                     f"understands up to {SCHEMA_VERSION}")
        for step in MIGRATIONS[found:]:
            for statement in statements(step):
                tx.execute(db.translate(statement))
        if found < SCHEMA_VERSION:
            db.set_schema_version(tx, SCHEMA_VERSION)
    return found
