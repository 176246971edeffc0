"""Quota checks, run inside the transaction that would exceed them.

A tenant's effective :class:`~harli_sgl.jobs.tenants.Limits` are its own row in
``tenants`` over the store's defaults. A check that guards a write first locks
that row (creating it if the tenant has none yet), so every write that counts
against one tenant's quota takes turns on it, on SQLite (whose write lock
already serialises) and on PostgreSQL alike; then it counts and refuses with
:class:`QuotaExceededError`, naming the limit, before anything is written.
"""

from __future__ import annotations

from harli_sgl.jobs.db.base import Tx
from harli_sgl.jobs.store.base import now_s
from harli_sgl.jobs.store_errors import QuotaExceededError
from harli_sgl.jobs.tenants import LIMIT_NAMES, Limits

WAITING = ("validating_files", "queued")
UNLIMITED = 2**62  # what SQL compares with when a limit is None


def ensure_tenant(tx: Tx, tenant: str, now: int) -> None:
    tx.execute("INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
               (tenant, now))


def tenant_limits(tx: Tx, tenant: str, defaults: Limits, *, lock: bool = False) -> Limits:
    """``tenant``'s effective limits; ``lock``: hold its row until the commit (write transactions)."""
    if lock:
        ensure_tenant(tx, tenant, now_s())
    row = tx.one(f"SELECT {', '.join(LIMIT_NAMES)} FROM tenants WHERE id = ?"
                 f"{tx.lock() if lock else ''}", (tenant,))
    if row is None:
        return defaults
    return Limits(**{n: None if row[n] is None else int(row[n]) for n in LIMIT_NAMES}).over(defaults)


def stored_bytes(tx: Tx, tenant: str) -> int:
    return int(tx.one("SELECT COALESCE(SUM(bytes), 0) AS n FROM files WHERE tenant = ?",
                      (tenant,))["n"])  # type: ignore[index]


def jobs_in(tx: Tx, tenant: str, statuses: tuple[str, ...]) -> int:
    marks = ", ".join("?" for _ in statuses)
    return int(tx.one(f"SELECT COUNT(*) AS n FROM jobs WHERE tenant = ? AND status IN ({marks})",
                      (tenant, *statuses))["n"])  # type: ignore[index]


def check_stored_bytes(tx: Tx, tenant: str, adding: int, defaults: Limits, *,
                       lock: bool = True) -> None:
    limit = tenant_limits(tx, tenant, defaults, lock=lock).max_stored_bytes
    if limit is None:
        return
    used = stored_bytes(tx, tenant)
    if used + adding > limit:
        raise QuotaExceededError(
            f"Quota exceeded: tenant {tenant!r} stores {used} bytes of files; {adding} more "
            f"would pass its max_stored_bytes of {limit}. Delete files you no longer need "
            f"(DELETE /v1/files/{{file_id}}) or ask the operator for a larger quota.",
            "max_stored_bytes", limit)


def check_queued_jobs(tx: Tx, tenant: str, defaults: Limits) -> None:
    limit = tenant_limits(tx, tenant, defaults, lock=True).max_queued_jobs
    if limit is None:
        return
    waiting = jobs_in(tx, tenant, WAITING)
    if waiting >= limit:
        raise QuotaExceededError(
            f"Quota exceeded: tenant {tenant!r} has {waiting} fine-tuning jobs waiting to run, "
            f"its max_queued_jobs is {limit}. Wait for one to start or cancel one, or ask the "
            f"operator for a larger quota.", "max_queued_jobs", limit)


def running_limit_sql() -> str:
    """SQL for the running-jobs limit of the tenant of row ``j``, given the default as ``?``."""
    return "COALESCE((SELECT t.max_running_jobs FROM tenants t WHERE t.id = j.tenant), ?)"


def default_or_unlimited(value: int | None) -> int:
    return UNLIMITED if value is None else value
