"""TenantAuth in front of SGLang's own key middleware, for every combination of server keys.

A FastAPI app with routes of each auth level stands in for SGLang's; SGLang's
real ``add_api_key_middleware`` is added first and TenantAuth after it, which
is the order the hook in :mod:`harli_sgl.sglang.tenant_auth` produces (the last
middleware added is the outermost). Keys come from a real store. Each route
echoes the principal it got and the ``Authorization`` header that reached it.
"""

from __future__ import annotations

import itertools

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sglang.srt.utils.auth import AuthLevel, add_api_key_middleware, auth_level

from harli_sgl.auth_headers import admin_headers, bearer, normal_headers
from harli_sgl.jobs import principal as P
from harli_sgl.jobs.store import JobStore
from harli_sgl.sglang.tenant_auth import TenantAuth

API_KEYS = (None, "normal-key-123")
ADMIN_KEYS = (None, "admin-key-456")


def echo(request: Request) -> dict:
    caller = P.of_scope(request)
    current = P.CURRENT.get()
    assert current == caller  # what the TokenizerManager reads is what the routes read
    return {"tenant": caller and caller.tenant, "kind": caller and caller.kind,
            "operator": caller and caller.operator,
            "authorization": request.headers.get("authorization")}


@auth_level(AuthLevel.ADMIN_OPTIONAL)
def admin_optional(request: Request) -> dict:
    return {"authorization": request.headers.get("authorization")}


@auth_level(AuthLevel.ADMIN_FORCE)
def admin_force() -> dict:
    return {}


def make_app(store: JobStore, api_key: str | None, admin_api_key: str | None) -> TestClient:
    app = FastAPI()
    for path in ("/generate", "/v1/models", "/harli/status", "/v1/files", "/server_info"):
        app.add_api_route(path, echo, methods=["GET", "POST"])
    app.add_api_route("/load_lora_adapter", admin_optional, methods=["POST"])
    app.add_api_route("/harli/keys", admin_force, methods=["GET"])
    app.add_api_route("/health", lambda: {"ok": True}, methods=["GET"])
    add_api_key_middleware(app, api_key=api_key, admin_api_key=admin_api_key)
    app.add_middleware(TenantAuth, store=store, api_key=api_key, admin_api_key=admin_api_key,
                       fastapi_app=app)
    return TestClient(app)


def own_calls(c: TestClient, api_key: str | None, admin_api_key: str | None) -> None:
    headers = admin_headers(api_key, admin_api_key)
    for path in ("/generate", "/v1/models", "/harli/status"):
        r = c.post(path, headers=headers)
        assert r.status_code == 200 and r.json()["operator"] and r.json()["tenant"] == "default"
    assert c.post("/load_lora_adapter", headers=headers).status_code == 200
    if api_key:  # the server key still reaches what it reached before tenants
        assert c.post("/generate", headers=normal_headers(api_key)).status_code == 200


@pytest.fixture
def store(tmp_path):
    s = JobStore(str(tmp_path / "work"))
    yield s
    s.close()


@pytest.mark.parametrize("api_key, admin_api_key", list(itertools.product(API_KEYS, ADMIN_KEYS)))
def test_harli_sgl_own_calls_and_tenants(store, api_key, admin_api_key):
    tenant_key = store.create_key("acme").secret
    c = make_app(store, api_key, admin_api_key)
    # harli_sgl's own calls (the worker, the publisher, the start-up profiler) use the
    # operator's key; the launcher refuses tenants' keys on a server with no key at all.
    if api_key or admin_api_key:
        own_calls(c, api_key, admin_api_key)
    else:
        assert c.post("/generate", headers=admin_headers(api_key, admin_api_key)).status_code == 401
    # A tenant: its routes, as itself, its key replaced by the server's (or removed).
    r = c.get("/v1/files", headers=bearer(tenant_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": "acme", "kind": P.TENANT, "operator": False,
                        "authorization": f"Bearer {api_key}" if api_key else None}
    r = c.get("/server_info", headers=bearer(tenant_key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    if api_key or admin_api_key:  # SGLang guards its admin routes only when a key is set
        assert c.post("/load_lora_adapter", headers=bearer(tenant_key)).status_code == 401
    else:  # tenants exist but nothing guards them: nobody may call them
        assert c.post("/load_lora_adapter", headers=bearer(tenant_key)).status_code == 403
    assert c.get("/harli/keys", headers=bearer(tenant_key)).status_code in (401, 403)
    if admin_api_key:
        assert c.get("/harli/keys", headers=bearer(admin_api_key)).status_code == 200
    # The admin key is the operator; the server key is, unless an admin key is set.
    if api_key:
        r = c.get("/harli/status", headers=bearer(api_key)).json()
        assert r["kind"] == P.SERVER_KEY and r["operator"] == (admin_api_key is None)
    # Health stays open; a wrong key, a revoked key or none is refused without an echo.
    assert c.get("/health").status_code == 200
    for headers in ({"Authorization": "Bearer hk-guess-0000"}, {}):
        r = c.get("/v1/files", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "hk-guess" not in r.text
    store.revoke_key(store.list_keys("acme")[0]["id"])
    assert c.get("/v1/files", headers=bearer(tenant_key)).status_code == 401


def test_a_server_without_keys_is_open_until_one_exists(store):
    c = make_app(store, None, None)
    r = c.get("/v1/files")
    assert r.status_code == 200 and r.json()["tenant"] == "default" and r.json()["operator"]
    store.create_key("acme")
    c = make_app(store, None, None)  # a fresh middleware: it caches only "keys exist"
    assert c.get("/v1/files").status_code == 401
