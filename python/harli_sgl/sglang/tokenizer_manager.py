"""HarliTokenizerManager: serve every adapter of the fleet, whichever instance trained it.

SGLang already does the hard half. ``TokenizerManager.lora_ref_cache`` remembers
every adapter ever loaded by name and path; when a request names one that is
not loaded (evicted past ``--max-loaded-loras``), ``_resolve_lora_path`` loads it
again and SGLang evicts the least recently used one. What it cannot know is an
adapter this instance never loaded: a request for it fails with "Got LoRA
adapter that has never been loaded". In a fleet that is every adapter another
instance trained, so behind a router half the requests for a new adapter failed.

This subclass (passed to SGLang through ``init_tokenizer_manager``'s
``TokenizerManagerClass`` seam) closes that gap with the fleet's
:class:`~harli_sgl.jobs.adapter_catalog.AdapterCatalog`:

* **At start** it registers every finished adapter in ``lora_ref_cache`` and
  loads the newest ones, up to ``--max-loaded-loras`` (``EAGER_LOADS`` when
  unset), before the instance reports healthy (:meth:`harli_ready`), so a router
  sends it traffic only once it can serve them.
* **While running** it polls the catalog every ``POLL_S`` and registers new
  adapters; SGLang loads each on its first request.
* **On a request** that names an adapter neither loaded nor registered, it asks
  the catalog before SGLang decides, which covers an adapter finished in the
  last poll interval; an adapter the catalog does not know fails exactly as in
  SGLang.

Adapters are read from the shared artifacts directory, so every instance loads
the same files. Store queries run in a thread: the event loop serves requests.

Tenants. Every request that names an adapter passes ``_validate_and_resolve_lora``,
whatever route it came by (``/generate``'s ``lora_path``, the OpenAI routes'
``model`` or ``lora_path``), so that is where ownership is enforced: each
named adapter must belong to the caller's tenant (the principal the tenant-auth
middleware set, :data:`harli_sgl.jobs.principal.CURRENT`) or be shared with it,
else the request fails with a 404 that reads the same whether the adapter
exists or not. A request with no principal (none came through HTTP) may name
no adapter. :meth:`harli_refused_adapter` is the same check for the OpenAI
routes, which run it before SGLang converts the request, to answer a clean 404.

``lora_id`` is the server's, never the client's. SGLang's request types carry
it as a field for the tokenizer manager to fill in from ``lora_path``, but its
HTTP routes accept it from the body, and a request that set it without a
``lora_path`` skipped resolution and ownership and reached the scheduler as is:
another tenant's adapter id served that tenant's adapter, and an unknown one
failed an assertion in the scheduler and took the whole server down. Every
request that sets one is refused with a 400 naming the field, before anything
else is resolved, and the id is dropped so the failed request releases nothing.

A refused request holds no adapter. SGLang releases a request's adapters when
it fails, also when it failed before acquiring them (a refused or never-loaded
adapter), and its registry then raises ``TypeError`` in a background task:
each such request left an asyncio traceback in the log beside the one clear
error line. :meth:`_release_lora_once` releases only what was acquired.

Tenants' prefixes. The same seam salts every request that acts for a tenant
with that tenant's cache namespace (:mod:`harli_sgl.sglang.tenant_scope`), so
no tenant matches, or learns the length of, another's cached prompt.

Input. The same subclass refuses token ids outside the vocabulary before they
reach the scheduler (:mod:`harli_sgl.sglang.token_ids`).
"""

from __future__ import annotations

import asyncio
import logging

from sglang.srt.lora.lora_registry import LoRARef
from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput
from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.runtime_context import get_lora

from harli_sgl.jobs import principal as P
from harli_sgl.jobs.errors import ApiError, bad_request, model_not_found
from harli_sgl.sglang.openai_models import ROUTE_ADAPTER
from harli_sgl.sglang.tenant_scope import current_tenant, salt_request
from harli_sgl.sglang.token_ids import check_token_ids

logger = logging.getLogger(__name__)

POLL_S = 2.0
EAGER_LOADS = 8


class RequestRefused(ValueError):
    """A request SGLang must fail with ``error``'s status (it reads ``status_code``)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error
        self.status_code = error.status


def lora_id_refused() -> ApiError:
    return bad_request("Invalid request field lora_id: it is assigned by the server and may not "
                       "be set; name an adapter with model (OpenAI routes) or lora_path.",
                       param="lora_id", code="invalid_lora_id")


def _names(lora_path) -> list:
    return [lora_path] if isinstance(lora_path, str) else list(lora_path or ())


def _client_lora_ids(obj) -> bool:
    """Whether the request (or a sub-request SGLang already split off) carries a lora_id."""
    def named(value) -> bool:
        if isinstance(value, (list, tuple)):
            return any(v is not None for v in value)
        return value is not None

    subs = obj.__dict__.get("_sub_obj_cache", {}).values()
    return named(obj.lora_id) or any(named(sub.lora_id) for sub in subs)


def _drop_lora_ids(obj) -> None:
    # The refused request's states point at these objects, and SGLang releases a failed
    # request's lora_id: releasing one it never acquired would drop another request's hold.
    obj.lora_id = None
    for sub in obj.__dict__.get("_sub_obj_cache", {}).values():
        sub.lora_id = None


class HarliTokenizerManager(TokenizerManager):
    # Set in the main process before SGLang builds the manager (there is one per server).
    harli_catalog = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._harli_ready = self.harli_catalog is None or not self.enable_lora
        self._harli_follow: asyncio.Task | None = None

    # -- input ------------------------------------------------------------------------------

    def _validate_one_request(self, obj, input_ids) -> None:
        super()._validate_one_request(obj, input_ids)
        check_token_ids(input_ids, self.model_config.vocab_size)

    # -- readiness ------------------------------------------------------------------------

    def auto_create_handle_loop(self):
        # SGLang creates its loops on the first request (its own warm-up at start); the
        # catalog follower starts with them, on the server's event loop.
        super().auto_create_handle_loop()
        if self._harli_follow is None and self.harli_catalog is not None and self.enable_lora:
            self._harli_follow = self.event_loop.create_task(self._follow_catalog())

    def harli_ready(self) -> bool:
        """Whether the fleet's adapters are registered and the newest loaded."""
        if self._harli_follow is None:
            self.auto_create_handle_loop()
        return self._harli_ready

    async def _follow_catalog(self) -> None:
        catalog = self.harli_catalog
        while True:
            try:
                adapters = await asyncio.to_thread(catalog.new_adapters)
                for adapter in adapters:
                    self._register(adapter)
                if not self._harli_ready:
                    await self._load_newest(adapters)
                    self._harli_ready = True
                    logger.info("harli: %d finished adapters registered; serving", len(adapters))
            except Exception:  # the store may be unreachable for a moment; try again
                logger.exception("harli: reading the fleet's adapters failed; retrying")
            await asyncio.sleep(POLL_S)

    async def _load_newest(self, adapters) -> None:
        limit = get_lora().max_loaded_loras or EAGER_LOADS
        loaded = set(self.lora_registry.get_all_adapters())
        for adapter in adapters[-limit:]:
            if adapter.name in loaded:
                continue
            result = await self.load_lora_adapter(
                LoadLoRAAdapterReqInput(lora_name=adapter.name, lora_path=adapter.path))
            if not result.success:
                # Still registered: a request for it retries the load and reports SGLang's error.
                logger.error("harli: adapter %s from %s did not load: %s", adapter.name,
                             adapter.path, result.error_message)

    def _register(self, adapter) -> None:
        if adapter.name not in self.lora_ref_cache:
            # pinned=False, not None: SGLang's implicit reload passes it on as a number.
            self.lora_ref_cache[adapter.name] = LoRARef(lora_name=adapter.name,
                                                        lora_path=adapter.path, pinned=False)

    # -- requests -------------------------------------------------------------------------

    async def harli_refused_adapter(self, names) -> str | None:
        """The first of ``names`` the calling tenant may not serve; None if it may serve all."""
        if self.harli_catalog is None:
            return None
        caller = P.CURRENT.get()
        for name in dict.fromkeys(n for n in names if n is not None):
            if caller is None:
                return name
            access = await asyncio.to_thread(self.harli_catalog.store.adapter_access,
                                             caller.tenant, name)
            if not access.allows(caller.tenant, served_without_job=name in self.lora_ref_cache):
                return name
        return None

    async def harli_request_error(self, obj) -> ApiError | None:
        """Why ``obj`` (a ``/generate``-style request) may not run as sent; None if it may.

        A client-supplied ``lora_id`` first (it is dropped, so the failed request releases
        nothing), then each adapter ``lora_path`` names, against the caller's tenant.
        """
        if _client_lora_ids(obj):
            _drop_lora_ids(obj)
            return lora_id_refused()
        refused = await self.harli_refused_adapter(_names(obj.lora_path))
        return None if refused is None else model_not_found(refused)

    async def _validate_and_resolve_lora(self, obj) -> None:
        # The one seam every generate, encode and score request passes before it is
        # tokenized: apply a route's adapter, refuse what may not run, and scope the
        # prefix cache to the tenant.
        route_adapter = ROUTE_ADAPTER.get()
        if route_adapter is not None and obj.lora_path is None and obj.is_single:
            obj.lora_path = route_adapter
        error = await self.harli_request_error(obj)
        if error is not None:
            raise RequestRefused(error)
        tenant = current_tenant()
        if tenant is not None and hasattr(obj, "cache_salt"):  # embedding requests have none
            salt_request(obj, tenant)
        await super()._validate_and_resolve_lora(obj)

    def _release_lora_once(self, state):
        if state.obj.lora_id is None and not state.lora_released:
            state.lora_released = True  # failed before it acquired an adapter
            return None
        return super()._release_lora_once(state)

    async def _resolve_lora_path(self, obj) -> None:
        if self.harli_catalog is not None:
            for name in {n for n in _names(obj.lora_path) if n is not None and n not in self.lora_ref_cache}:
                adapter = await asyncio.to_thread(self.harli_catalog.find, name)
                if adapter is not None:
                    self._register(adapter)
        await super()._resolve_lora_path(obj)
