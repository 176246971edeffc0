"""Tenants in the store: their quotas and usage, and who may serve which adapter.

A tenant's row holds the quotas an admin set for it (``None``: the server's
default, see :class:`~harli_sgl.jobs.tenants.Limits`); usage is counted from
the objects themselves, so it can never drift from them.

Serving. An adapter made by a job belongs to the job's tenant. An adapter the
operator loaded some other way (``/load_lora_adapter``, ``--lora-paths``) has
no job: it belongs to the default tenant. Either may be shared by an admin with
one tenant or with every tenant (``*``). :meth:`TenantRecords.adapter_access`
answers for one name; :meth:`TenantRecords.visible_adapters` for a list of
them in two queries (what ``/v1/models`` needs).

A checkpoint's model (``fine_tuned_model_checkpoint``) is owned the same way:
by its job's tenant, shared when an admin shared that name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harli_sgl.jobs import ids
from harli_sgl.jobs.store.base import StoreBase, now_s
from harli_sgl.jobs.store.quota import WAITING, ensure_tenant, jobs_in, stored_bytes, tenant_limits
from harli_sgl.jobs.tenants import (DEFAULT_TENANT, EVERY_TENANT, LIMIT_NAMES, Limits,
                                    check_tenant)


class AdapterAccess(NamedTuple):
    owner: str | None  # the tenant of the job that made it; None: no job made it
    shared: bool       # shared with the asking tenant, or with every tenant

    def allows(self, tenant: str, served_without_job: bool) -> bool:
        """Whether ``tenant`` may serve it; ``served_without_job``: the server has it loaded
        although no job made it (an operator's adapter, which the default tenant owns)."""
        owner = self.owner or (DEFAULT_TENANT if served_without_job else None)
        return owner is not None and (owner == tenant or self.shared)


class TenantRecords(StoreBase):
    def set_limits(self, tenant: str, limits: Limits) -> dict[str, Any]:
        """Give ``tenant`` its own quotas (``None`` fields: the server's default)."""
        check_tenant(tenant)
        with self._db.write() as tx:
            ensure_tenant(tx, tenant, now_s())
            tx.execute(f"UPDATE tenants SET {', '.join(f'{n} = ?' for n in LIMIT_NAMES)} "
                       "WHERE id = ?", (*(getattr(limits, n) for n in LIMIT_NAMES), tenant))
        return self.get_tenant(tenant)  # type: ignore[return-value]

    def get_tenant(self, tenant: str) -> dict[str, Any] | None:
        """A tenant's quotas (its own and the effective ones) and usage; None if unknown."""
        with self._db.read(snapshot=True) as tx:
            row = tx.one("SELECT * FROM tenants WHERE id = ?", (tenant,))
            if row is None:
                return None
            own = {n: row[n] for n in LIMIT_NAMES}
            return {
                "id": tenant,
                "object": "harli.tenant",
                "created_at": row["created_at"],
                "limits": own,
                "effective_limits": tenant_limits(tx, tenant, self.default_limits).to_dict(),
                "usage": {"running_jobs": jobs_in(tx, tenant, ("running",)),
                          "queued_jobs": jobs_in(tx, tenant, WAITING),
                          "stored_bytes": stored_bytes(tx, tenant)},
            }

    def list_tenants(self) -> list[dict[str, Any]]:
        return [self.get_tenant(r["id"]) for r in self._all("SELECT id FROM tenants ORDER BY id")]  # type: ignore[misc]

    # -- adapters ---------------------------------------------------------------------------

    def adapter_access(self, tenant: str, adapter: str) -> AdapterAccess:
        with self._db.read() as tx:
            row = tx.one("SELECT tenant FROM jobs WHERE fine_tuned_model = ? "
                         "AND status = 'succeeded' LIMIT 1", (adapter,))
            shared = tx.one("SELECT 1 FROM adapter_shares WHERE adapter = ? AND tenant IN (?, ?)",
                            (adapter, tenant, EVERY_TENANT)) is not None
        owner = None if row is None else row["tenant"]
        if owner is None:
            checkpoint = self.checkpoint_named(adapter)  # type: ignore[attr-defined]
            owner = None if checkpoint is None else checkpoint.tenant
        return AdapterAccess(owner, shared)

    def visible_adapters(self, tenant: str, served: list[str]) -> list[str]:
        """Those of the ``served`` adapter names that ``tenant`` may serve, in order."""
        if not served:
            return []
        marks = ", ".join("?" for _ in served)
        with self._db.read(snapshot=True) as tx:
            owners = {r["fine_tuned_model"]: r["tenant"] for r in tx.all(
                f"SELECT fine_tuned_model, tenant FROM jobs WHERE status = 'succeeded' "
                f"AND fine_tuned_model IN ({marks})", served)}
            shared = {r["adapter"] for r in tx.all(
                f"SELECT adapter FROM adapter_shares WHERE tenant IN (?, ?) AND adapter IN ({marks})",
                (tenant, EVERY_TENANT, *served))}
        for name in served:  # loaded checkpoints: few, and each one indexed query
            if name not in owners and ids.parse_checkpoint_model_name(name) is not None:
                checkpoint = self.checkpoint_named(name)  # type: ignore[attr-defined]
                if checkpoint is not None:
                    owners[name] = checkpoint.tenant
        return [name for name in served
                if AdapterAccess(owners.get(name), name in shared).allows(tenant, True)]

    def share_adapter(self, adapter: str, tenant: str) -> dict[str, Any]:
        """Let ``tenant`` (or every tenant: ``*``) serve ``adapter``; sharing twice is one share."""
        if tenant != EVERY_TENANT:
            check_tenant(tenant)
        if not isinstance(adapter, str) or not adapter or len(adapter) > 512:
            raise ValueError("adapter must be an adapter's name (1-512 characters)")
        with self._db.write() as tx:
            tx.execute("INSERT INTO adapter_shares (adapter, tenant, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (adapter, tenant) DO NOTHING", (adapter, tenant, now_s()))
        return {"object": "harli.adapter_share", "adapter": adapter, "tenant": tenant}

    def unshare_adapter(self, adapter: str, tenant: str) -> bool:
        with self._db.write() as tx:
            return tx.execute("DELETE FROM adapter_shares WHERE adapter = ? AND tenant = ?",
                              (adapter, tenant)) == 1

    def list_shares(self, adapter: str | None = None) -> list[dict[str, Any]]:
        where, args = ("adapter = ?", (adapter,)) if adapter is not None else ("TRUE", ())
        return [{"object": "harli.adapter_share", "adapter": r["adapter"], "tenant": r["tenant"],
                 "created_at": r["created_at"]}
                for r in self._all(f"SELECT * FROM adapter_shares WHERE {where} "
                                   "ORDER BY adapter, tenant", args)]
