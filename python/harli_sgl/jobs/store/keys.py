"""API keys in the store: created for a tenant, looked up by hash on every request, revoked at once.

Only the key's SHA-256 and its last characters are stored (:mod:`harli_sgl.jobs.keys`);
:meth:`KeyRecords.create_key` returns the key itself once, and nothing can show
it again. A request's key is found by its hash with one indexed query; a
revoked key has ``revoked_at`` set and is never found again, on every instance
of a fleet from the next request on, because nothing caches a lookup.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harli_sgl.jobs import keys
from harli_sgl.jobs.objects import key_object
from harli_sgl.jobs.store.base import StoreBase, now_s, owned
from harli_sgl.jobs.store.quota import ensure_tenant
from harli_sgl.jobs.tenants import check_tenant


class NewKey(NamedTuple):
    key: dict[str, Any]  # the key object, as lists show it
    secret: str          # the key itself: shown once


class KeyRecords(StoreBase):
    def create_key(self, tenant: str, name: str | None = None) -> NewKey:
        """A new key for ``tenant`` (created if it has no row yet)."""
        check_tenant(tenant)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise ValueError("a key's name is a string of at most 200 characters")
        secret, key_id = keys.new_key(), keys.new_key_id()
        with self._db.write() as tx:
            now = now_s()
            ensure_tenant(tx, tenant, now)
            tx.execute("INSERT INTO api_keys (id, tenant, key_hash, hint, name, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (key_id, tenant, keys.key_hash(secret), keys.key_hint(secret), name, now))
        return NewKey(self.get_key(key_id), secret)  # type: ignore[arg-type]

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        if not keys.is_valid_key_id(key_id):
            return None
        row = self._one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        return None if row is None else key_object(row)

    def list_keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Keys (of ``tenant``), newest first, revoked ones included."""
        where, args = owned("TRUE", [], tenant)
        return [key_object(r) for r in self._all(
            f"SELECT * FROM api_keys WHERE {where} ORDER BY seq DESC", tuple(args))]

    def revoke_key(self, key_id: str) -> dict[str, Any] | None:
        """Revoke a key (again: no change); None if there is no such key."""
        if not keys.is_valid_key_id(key_id):
            return None
        with self._db.write() as tx:
            tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       (now_s(), key_id))
        return self.get_key(key_id)

    def tenant_of_key(self, secret: str) -> str | None:
        """The tenant whose live key ``secret`` is; None for anything else."""
        row = self._one("SELECT tenant FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                        (keys.key_hash(secret),))
        return None if row is None else row["tenant"]

    def has_live_keys(self) -> bool:
        return self._one("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1") is not None
