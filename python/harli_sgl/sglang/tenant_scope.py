"""What SGLang keeps between requests, scoped to the tenant that made it.

Two things outlive a request in SGLang and were shared between tenants:

* **The prefix cache.** The radix cache matches any earlier request's prefix,
  and ``meta_info.cached_tokens`` says how many tokens matched, so tenant B
  could confirm or extract tenant A's prompt piece by piece (a 332-token prompt
  of A's read back ``cached_tokens=331`` for B; a timing probe would say the
  same without the field). SGLang 0.5.23 keys its radix cache on a request's
  ``cache_salt`` ("a cache namespace used to isolate otherwise-identical
  prefixes"), so every request that acts for a tenant gets that tenant's salt,
  put in front of any salt the client chose (which keeps its own meaning, inside
  the tenant). Requests of one tenant still share prefixes; across tenants none
  are shared, so a system prompt common to several tenants is prefilled once per
  tenant. Requests that act for nobody (SGLang's warm-up) stay unsalted.
* **Stored responses** (``--enable-response-store``): ``/v1/responses`` keeps
  every stored response and its conversation in two dicts on the serving
  object, keyed by response id, and any caller who named an id got its
  conversation (``previous_response_id``), the response (``GET``) or cancelled
  it. :class:`TenantScopedStore` replaces both dicts: the same mapping, keyed by
  (tenant, id) underneath, so another tenant's id is simply not there and
  SGLang answers its own 404.

The tenant comes from :data:`harli_sgl.jobs.principal.CURRENT`, which the
tenant-auth middleware sets for the whole request, including the tasks it
starts (a streamed or background response).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from harli_sgl.jobs import principal as P

RESPONSES_INIT = "sglang.srt.entrypoints.openai.serving_responses.OpenAIServingResponses.__init__"


def tenant_salt(tenant: str, client_salt: str | None) -> str:
    """The cache salt of a request: the tenant's, then the client's own if it gave one.

    Tenant names cannot contain ``;``, so no client salt makes one tenant's salt equal
    another's.
    """
    own = f"tenant={tenant}"
    return f"{own};{client_salt}" if client_salt else own


def salt_request(obj, tenant: str) -> None:
    """Put ``tenant``'s salt on a request and on the sub-requests SGLang split off already."""
    def salted(value):
        if isinstance(value, list):
            return [tenant_salt(tenant, v) for v in value]
        return tenant_salt(tenant, value)

    obj.cache_salt = salted(obj.cache_salt)
    for sub in obj.__dict__.get("_sub_obj_cache", {}).values():
        sub.cache_salt = salted(sub.cache_salt)


def current_tenant() -> str | None:
    caller = P.CURRENT.get()
    return None if caller is None else caller.tenant


class TenantScopedStore(MutableMapping):
    """A dict whose keys are seen only by the tenant that stored them."""

    def __init__(self) -> None:
        self._items: dict[tuple[str | None, Any], Any] = {}

    def _key(self, key) -> tuple[str | None, Any]:
        return current_tenant(), key

    def __getitem__(self, key):
        return self._items[self._key(key)]

    def __setitem__(self, key, value) -> None:
        self._items[self._key(key)] = value

    def __delitem__(self, key) -> None:
        del self._items[self._key(key)]

    def __iter__(self):
        tenant = current_tenant()
        return (key for owner, key in self._items if owner == tenant)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def scope_response_stores(original, self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.response_store = TenantScopedStore()
    self.msg_store = TenantScopedStore()


def install_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(RESPONSES_INIT, scope_response_stores, HookType.AROUND)
    HookRegistry.apply_hooks()
