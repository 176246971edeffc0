"""The job store's databases: SQLite for one instance, PostgreSQL for a fleet.

:mod:`.base` states what the store needs from a database, :mod:`.sqlite` and
:mod:`.postgres` provide it, :mod:`.migrations` brings either to the current
schema. Backends are imported on demand, so a SQLite-only process never loads
psycopg.
"""

from __future__ import annotations

from harli_sgl.config import is_postgres_url
from harli_sgl.jobs.db.base import Database


def open_database(db_url: str | None, sqlite_path: str) -> Database:
    """``db_url=None``: the SQLite file at ``sqlite_path``; ``postgresql://...``: that database."""
    if db_url is None:
        from harli_sgl.jobs.db.sqlite import SqliteDatabase

        return SqliteDatabase(sqlite_path)
    if is_postgres_url(db_url):
        from harli_sgl.jobs.db.postgres import PostgresDatabase

        return PostgresDatabase(db_url)
    scheme = db_url.split("://", 1)[0] if "://" in db_url else db_url[:0]
    # The URL itself may hold a password: name only its scheme.
    raise ValueError(f"unsupported job-store URL scheme {scheme!r}: give a postgresql:// URL, "
                     "or none for SQLite in the workdir")
