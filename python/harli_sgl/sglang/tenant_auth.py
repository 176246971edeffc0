"""TenantAuth: every request authenticated by its key, acting for that key's tenant.

SGLang knows two keys (``--api-key``, ``--admin-api-key``) and checks them in
an ASGI middleware it adds when the server starts (``add_api_key_middleware``,
in ``sglang/srt/utils/auth.py``); a key from the store would fail that check.
So harli_sgl hooks that function (an AFTER hook in SGLang's ``HookRegistry``)
and adds :class:`TenantAuth` right after it, which makes TenantAuth the
outermost layer: it sees each request first and decides, for routes of
SGLang's *normal* auth level, who the caller is:

* the admin key: the operator (``admin``), acting for the default tenant;
* the server's ``--api-key``: the default tenant, with every right that key
  had before tenants (``server_key``);
* a live key from the store: its tenant (``tenant``), which reaches only
  :data:`TENANT_ROUTES` (inference, models, files, fine-tuning, status) and
  gets 403 on SGLang's operational routes (``/flush_cache``, ``/abort_request``...);
* anything else: 401 with an OpenAI-style body that never repeats the key.

It then sets the :class:`~harli_sgl.jobs.principal.Principal` on the scope and
in :data:`~harli_sgl.jobs.principal.CURRENT`, and replaces the request's
``Authorization`` header by the server's own key (or removes it), so SGLang's
check passes and the tenant's key travels no further into the server. Routes of
the admin levels (``/load_lora_adapter``, ``/harli/policy``, the key routes) are
left to SGLang's own check untouched: a tenant's key never unlocks them.

A server with no ``--api-key`` and no live key in the store is open, as before:
every request acts for the default tenant. Key lookups run in a thread and are
never cached, so a revoked key is refused from the next request on.
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi.responses import JSONResponse
from sglang.srt.utils.auth import AuthLevel, _get_auth_level_from_app_and_scope

from harli_sgl.jobs import principal as P
from harli_sgl.jobs.errors import ApiError

# Routes a tenant's key may call; everything else of the normal level is the operator's.
TENANT_ROUTES = frozenset({
    "/generate", "/encode", "/classify", "/v1/completions", "/v1/chat/completions",
    "/v1/embeddings", "/v1/classify", "/v1/rerank", "/v1/score", "/v1/responses",
    "/v1/messages", "/v1/messages/count_tokens", "/v1/tokenize", "/v1/detokenize",
    "/tokenize", "/detokenize", "/v1/models", "/get_model_info", "/model_info",
    "/harli/status", "/ping",
})
# Stored responses are scoped to their tenant (tenant_scope.py), so a tenant may read its own.
TENANT_PREFIXES = ("/v1/models/", "/v1/files", "/v1/fine_tuning/", "/v1/responses/")
OPEN_PREFIXES = ("/health", "/ready", "/metrics")  # SGLang leaves these open too


def is_tenant_route(path: str) -> bool:
    return path in TENANT_ROUTES or path.startswith(TENANT_PREFIXES)


class TenantAuth:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app, *, store, api_key: str | None, admin_api_key: str | None,
                 fastapi_app) -> None:
        self.app = app
        self.store = store
        self.api_key = api_key
        self.admin_api_key = admin_api_key
        self.fastapi_app = fastapi_app
        self._keys_exist = False  # once keys exist, an unauthenticated request is refused

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] == "OPTIONS"
                or scope["path"].startswith(OPEN_PREFIXES)):
            await self.app(scope, receive, send)
            return
        if _get_auth_level_from_app_and_scope(self.fastapi_app, scope) != AuthLevel.NORMAL:
            if not (self.api_key or self.admin_api_key) and await self._tenancy_on():
                # No SGLang key guards these routes, yet tenants exist: nobody may call them.
                await _refuse(scope, receive, send, 403, "This route needs the server's "
                              "--admin-api-key, and none is configured", "forbidden")
                return
            await self.app(scope, receive, send)
            return
        caller = await self._authenticate(_bearer(scope))
        if caller is None:
            await _refuse(scope, receive, send, 401, "Incorrect or revoked API key provided. "
                          "Pass a valid key as 'Authorization: Bearer <key>'.", "invalid_api_key")
            return
        if caller.kind == P.TENANT and not is_tenant_route(scope["path"]):
            await _refuse(scope, receive, send, 403, f"{scope['path']} is an operator route; "
                          "a tenant's key cannot call it", "forbidden")
            return
        scope = {**scope, P.SCOPE_KEY: caller, "headers": self._forwarded(scope["headers"])}
        token = P.CURRENT.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            P.CURRENT.reset(token)

    async def _authenticate(self, key: str | None) -> P.Principal | None:
        if key is not None and self.admin_api_key and _same(key, self.admin_api_key):
            return P.Principal(P.DEFAULT_TENANT, P.ADMIN, operator=True)
        if key is not None and self.api_key and _same(key, self.api_key):
            return P.Principal(P.DEFAULT_TENANT, P.SERVER_KEY, operator=not self.admin_api_key)
        if key is not None:
            tenant = await asyncio.to_thread(self.store.tenant_of_key, key)
            if tenant is not None:
                return P.Principal(tenant, P.TENANT)
        if self.api_key or await self._tenancy_on():
            return None
        # An open server (no --api-key, no keys): everyone is the default tenant, as before.
        return P.Principal(P.DEFAULT_TENANT, P.SERVER_KEY, operator=not self.admin_api_key)

    async def _tenancy_on(self) -> bool:
        if not self._keys_exist:
            self._keys_exist = await asyncio.to_thread(self.store.has_live_keys)
        return self._keys_exist

    def _forwarded(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        if self.api_key:
            kept.append((b"authorization", b"Bearer " + self.api_key.encode()))
        return kept


def install(store) -> None:
    """Add TenantAuth outside SGLang's key middleware, whenever SGLang adds that one."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    def after_key_middleware(_result, app, *, api_key=None, admin_api_key=None, **_kw):
        app.add_middleware(TenantAuth, store=store, api_key=api_key, admin_api_key=admin_api_key,
                           fastapi_app=app)

    HookRegistry.register("sglang.srt.utils.auth.add_api_key_middleware", after_key_middleware,
                          HookType.AFTER)
    HookRegistry.apply_hooks()


def _bearer(scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


async def _refuse(scope, receive, send, status: int, message: str, code: str) -> None:
    e = ApiError(status, message, code=code)
    await JSONResponse(e.body(), status_code=status, headers=e.headers)(scope, receive, send)
