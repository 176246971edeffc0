"""The admin routes: API keys, tenants' quotas and adapter shares, for the holder of ``--admin-api-key``.

Every route here is marked ``AuthLevel.ADMIN_FORCE`` (SGLang's own marker), so
SGLang's key middleware lets through only the admin key, and answers 403 when
the server has none configured. Without an admin key, keys are managed from
the command line instead (``python -m harli_sgl.tools.tenants``), on the same
store. Errors are OpenAI-style bodies (:class:`~harli_sgl.jobs.error_route.OpenAIErrorRoute`),
and every change is written to the audit log, naming keys by their id only.

=======================================  ==========================================
``POST /harli/keys``                     ``{"tenant", "name"?}``: a new key; the only
                                         answer that ever holds the key itself
``GET /harli/keys[?tenant=]``            keys (never the keys themselves)
``DELETE /harli/keys/{key_id}``          revoke: refused from the next request on
``GET /harli/tenants[/{tenant}]``        quotas and usage
``POST /harli/tenants/{tenant}``         ``{"max_running_jobs"?, "max_queued_jobs"?,
                                         "max_stored_bytes"?}``; null: server default
``POST /harli/shares``                   ``{"adapter", "tenant"}`` (``"*"``: everyone)
``GET /harli/shares[?adapter=]``         shares
``DELETE /harli/shares?adapter=&tenant=`` unshare
=======================================  ==========================================
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from sglang.srt.utils.auth import AuthLevel, auth_level
from starlette.concurrency import run_in_threadpool

from harli_sgl.jobs import audit
from harli_sgl.jobs.errors import bad_request, not_found
from harli_sgl.jobs.error_route import OpenAIErrorRoute
from harli_sgl.jobs.router import json_body
from harli_sgl.jobs.store import JobStore
from harli_sgl.jobs.tenants import LIMIT_NAMES, Limits, is_valid_tenant

ADMIN = "operator"  # who the audit log names as acting on admin routes
admin_only = auth_level(AuthLevel.ADMIN_FORCE)


class AdminApi:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def install(self, app: FastAPI) -> None:
        # On the app itself, not through an included router: SGLang finds a route's auth
        # level on the app's own routes, and an included router hides its endpoints.
        for path, endpoint, method in (
                ("/harli/keys", self.create_key, "POST"),
                ("/harli/keys", self.list_keys, "GET"),
                ("/harli/keys/{key_id}", self.revoke_key, "DELETE"),
                ("/harli/tenants", self.list_tenants, "GET"),
                ("/harli/tenants/{tenant}", self.get_tenant, "GET"),
                ("/harli/tenants/{tenant}", self.set_limits, "POST"),
                ("/harli/shares", self.share, "POST"),
                ("/harli/shares", self.list_shares, "GET"),
                ("/harli/shares", self.unshare, "DELETE")):
            app.router.add_api_route(path, endpoint, methods=[method],
                                     route_class_override=OpenAIErrorRoute)

    # ------------------------------------------------------------------ keys

    @admin_only
    async def create_key(self, request: Request) -> dict[str, Any]:
        body = await _object(request)
        tenant, name = body.get("tenant"), body.get("name")
        if not is_valid_tenant(tenant):
            raise bad_request("tenant must be 1-32 characters of a-z, 0-9, '_' or '-', starting "
                              "with a letter or digit", param="tenant")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise bad_request("name must be a string of at most 200 characters", param="name")
        made = await run_in_threadpool(self.store.create_key, tenant, name)
        audit.record("key.create", tenant, made.key["id"], by=ADMIN)
        return {**made.key, "key": made.secret}

    @admin_only
    def list_keys(self, tenant: str | None = None) -> dict[str, Any]:
        return {"object": "list", "data": self.store.list_keys(tenant)}

    @admin_only
    def revoke_key(self, key_id: str) -> dict[str, Any]:
        key = self.store.revoke_key(key_id)
        if key is None:
            raise not_found("API key", key_id)
        audit.record("key.revoke", key["tenant"], key_id, by=ADMIN)
        return key

    # --------------------------------------------------------------- tenants

    @admin_only
    def list_tenants(self) -> dict[str, Any]:
        return {"object": "list", "data": self.store.list_tenants()}

    @admin_only
    def get_tenant(self, tenant: str) -> dict[str, Any]:
        found = self.store.get_tenant(tenant)
        if found is None:
            raise not_found("tenant", tenant)
        return found

    @admin_only
    async def set_limits(self, request: Request, tenant: str) -> dict[str, Any]:
        body = await _object(request)
        if not is_valid_tenant(tenant):
            raise not_found("tenant", tenant)
        unknown = set(body) - set(LIMIT_NAMES)
        if unknown or not body:
            raise bad_request(f"give any of {list(LIMIT_NAMES)} (null: the server's default), "
                              "nothing else")
        current = await run_in_threadpool(self.store.get_tenant, tenant)
        own = dict(current["limits"]) if current else {}
        try:
            limits = Limits(**{**own, **body})
        except ValueError as e:
            raise bad_request(str(e)) from None
        updated = await run_in_threadpool(self.store.set_limits, tenant, limits)
        audit.record("tenant.limits", tenant, tenant, by=ADMIN,
                     **{k: v for k, v in limits.to_dict().items()})
        return updated

    # ---------------------------------------------------------------- shares

    @admin_only
    async def share(self, request: Request) -> dict[str, Any]:
        body = await _object(request)
        try:
            shared = await run_in_threadpool(self.store.share_adapter, body.get("adapter"),
                                             body.get("tenant"))
        except ValueError as e:
            raise bad_request(str(e)) from None
        audit.record("adapter.share", shared["tenant"], shared["adapter"], by=ADMIN)
        return shared

    @admin_only
    def list_shares(self, adapter: str | None = None) -> dict[str, Any]:
        return {"object": "list", "data": self.store.list_shares(adapter)}

    @admin_only
    def unshare(self, adapter: str, tenant: str) -> dict[str, Any]:
        if not self.store.unshare_adapter(adapter, tenant):
            raise not_found("share", f"{adapter} with {tenant}")
        audit.record("adapter.unshare", tenant, adapter, by=ADMIN)
        return {"object": "harli.adapter_share", "adapter": adapter, "tenant": tenant,
                "deleted": True}


async def _object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
