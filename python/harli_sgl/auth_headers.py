"""Which bearer key each SGLang route wants, for harli_sgl's own calls to its server.

harli_sgl talks to its own HTTP server (the worker publishes adapters, the
start-up profiler drives load and toggles profiling), so it must present the
key SGLang's auth middleware (``sglang.srt.utils.auth.decide_request_auth``)
expects for each route's auth level:

* *normal* routes (``/generate``, ``/v1/models``, ``/harli/status``) want
  ``--api-key`` when one is set (or a tenant's key); harli_sgl's tenant
  authentication also accepts the admin key there, as the operator's. With
  only an admin key set they are open.
* *admin-optional* routes (``/load_lora_adapter``, ``/harli/profile``) want
  ``--admin-api-key`` when one is set, else ``--api-key``, else nothing.
* what only the operator sees (the detailed ``/harli/status``, every tenant's
  adapters in ``/v1/models``) wants the same key as admin-optional routes:
  :func:`admin_headers`, which therefore works for every call harli_sgl makes
  (a server with only ``--admin-api-key`` and tenants' keys refuses keyless calls).

Kept free of sglang imports so the worker can use it.
"""

from __future__ import annotations


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def normal_headers(api_key: str | None) -> dict[str, str]:
    """Headers for a route of SGLang's normal auth level."""
    return bearer(api_key)


def admin_headers(api_key: str | None, admin_api_key: str | None) -> dict[str, str]:
    """Headers for an ``ADMIN_OPTIONAL`` route: the admin key wins when one is set."""
    return bearer(admin_api_key or api_key)
