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

Checkpoints. A checkpoint's name (``fine_tuned_model_checkpoint``) is a model
like an adapter's: the catalog finds it, the same ownership rule applies, and it
is loaded through SGLang's dynamic LoRA loading exactly as an adapter is (it is
registered in ``lora_ref_cache`` and SGLang loads it on its first request).

Damaged adapters. Before SGLang loads an adapter from a local directory, its
files are checked (:func:`harli_sgl.jobs.adapter_files.adapter_problem`): a
missing directory or a truncated ``adapter_model.safetensors`` used to reach
SGLang's loader, whose error (a Hugging Face Hub repo-id error, or safetensors'
header error, with the server's path in it) came back to the client as a 400.
Now such a request is answered 503 ``adapter_unavailable`` naming the model and
the file at fault, never a path (:meth:`harli_adapter_error`, run where the
ownership check runs, after it: another tenant's damaged adapter is a 404 like
any other). The first time an adapter is found damaged, its job gets an error
event saying so and the operator's log one line with the path and how to
repair it; repaired files are loaded by the next request. An adapter already
loaded keeps serving from memory whatever happens to its files.

Tenants' prefixes. The same seam salts every request that acts for a tenant
with that tenant's cache namespace (:mod:`harli_sgl.sglang.tenant_scope`), so
no tenant matches, or learns the length of, another's cached prompt.

Input. The same subclass refuses token ids outside the vocabulary before they
reach the scheduler (:mod:`harli_sgl.sglang.token_ids`).

It stays whole above 300 lines: it is one SGLang seam (the tokenizer manager's
request path), and every check here must run in the same order on every route;
the rules themselves live in their own modules.
"""

from __future__ import annotations

import asyncio
import logging
import os

from sglang.srt.lora.lora_registry import LoRARef
from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput, LoadLoRAAdapterReqOutput
from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.runtime_context import get_lora

from harli_sgl.jobs import principal as P
from harli_sgl.jobs.adapter_files import CONFIG, WEIGHTS, adapter_problem
from harli_sgl.jobs.errors import SERVER_ERROR, ApiError, bad_request, model_not_found
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


def adapter_unavailable(name: str, problem: str) -> ApiError:
    """503 for an adapter the caller may serve whose files cannot be loaded (no path in it)."""
    return ApiError(503, f"The model {name!r} is unavailable: its adapter's files on the server "
                         f"are damaged or missing ({problem}). The operator has been told how "
                         f"to repair it; until then every request for it fails.",
                    param="model", code="adapter_unavailable", type=SERVER_ERROR)


def repair_hint(name: str, path: str, problem: str, job_id: str | None) -> str:
    """The operator's one log line for a damaged adapter: where, what, how to repair."""
    job = f" (job {job_id})" if job_id else ""
    return (f"harli: adapter {name}{job} cannot be served: {problem}, in {path}. To repair, put "
            f"its {CONFIG} and {WEIGHTS} back in that directory (from a backup or a copy of "
            f"the same adapter), or fine-tune it again; the next request loads the repaired "
            f"files, no restart needed.")


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
        self._harli_jobs: dict[str, str] = {}  # adapter name -> the job that made it
        self._harli_damaged: dict[str, str] = {}  # adapter name -> the problem already reported

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
        if adapter.job_id is not None:
            self._harli_jobs[adapter.name] = adapter.job_id
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

    async def harli_adapter_error(self, names) -> ApiError | None:
        """Why the caller may not be served ``names``: 404 for one it may not serve (first),
        503 for one whose files cannot be loaded; None if every one can be served."""
        refused = await self.harli_refused_adapter(names)
        if refused is not None:
            return model_not_found(refused)
        for name in dict.fromkeys(n for n in names if n is not None):
            error = await self._harli_unavailable(name)
            if error is not None:
                return error
        return None

    async def _harli_unavailable(self, name: str) -> ApiError | None:
        if self.harli_catalog is None or name in self.lora_registry.get_all_adapters():
            return None  # loaded: it serves from memory, whatever its files
        ref = self.lora_ref_cache.get(name)
        if ref is None:
            adapter = await asyncio.to_thread(self.harli_catalog.find, name)
            if adapter is None:
                return None  # not the fleet's: SGLang answers as for any unknown adapter
            self._register(adapter)
            ref = self.lora_ref_cache[name]
        problem = await self._harli_check_files(name, ref.lora_path)
        return None if problem is None else adapter_unavailable(name, problem)

    async def _harli_check_files(self, name: str, path) -> str | None:
        """What is wrong with the files at ``path`` (reported once); None if loadable.

        Only a local absolute path is checked: SGLang also loads a Hugging Face
        repo id, which an operator may name in ``/load_lora_adapter``."""
        if not isinstance(path, str) or not os.path.isabs(path):
            return None
        problem = await asyncio.to_thread(adapter_problem, path)
        if problem is None:
            self._harli_damaged.pop(name, None)  # repaired: a new fault is reported again
        elif self._harli_damaged.get(name) != problem:
            self._harli_damaged[name] = problem
            job_id = self._harli_jobs.get(name)
            logger.error(repair_hint(name, path, problem, job_id))
            if job_id is not None:
                await asyncio.to_thread(self._harli_job_event, job_id, name, problem)
        return problem

    def _harli_job_event(self, job_id: str, name: str, problem: str) -> None:
        try:
            self.harli_catalog.store.add_event(
                job_id, "error",
                f"{name} cannot be served: {problem}. Requests for it answer 503 "
                f"adapter_unavailable until the operator repairs its files.",
                {"code": "adapter_unavailable", "model": name, "problem": problem})
        except Exception:  # the record is a courtesy; the request's answer stands without it
            logger.exception("harli: recording the damaged adapter on job %s failed", job_id)

    async def load_lora_adapter(self, obj, request=None):
        # Every load passes here (start-up, a request's implicit reload, /load_lora_adapter),
        # so SGLang's loader never sees a damaged adapter directory.
        problem = await self._harli_check_files(obj.lora_name, obj.lora_path)
        if problem is not None:
            return LoadLoRAAdapterReqOutput(
                success=False, error_message=f"adapter {obj.lora_name!r} cannot be loaded: {problem}")
        return await super().load_lora_adapter(obj, request)

    async def harli_request_error(self, obj) -> ApiError | None:
        """Why ``obj`` (a ``/generate``-style request) may not run as sent; None if it may.

        A client-supplied ``lora_id`` first (it is dropped, so the failed request releases
        nothing), then each adapter ``lora_path`` names, against the caller's tenant.
        """
        if _client_lora_ids(obj):
            _drop_lora_ids(obj)
            return lora_id_refused()
        return await self.harli_adapter_error(_names(obj.lora_path))

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
