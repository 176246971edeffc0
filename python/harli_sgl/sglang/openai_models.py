"""What ``model`` names on SGLang's OpenAI routes: the base model, or an adapter the caller may serve.

Stock SGLang reads ``model`` in ``OpenAIServingBase._parse_model_parameter``:
``"<base>:<adapter>"`` selects the adapter, and any other name without a colon
silently serves the *base* model, so ``model="<fine-tuned model>"`` answered
from the wrong weights. And a name with a colon is split at its first one, so
OpenAI's ``ft:<base>:<tenant>:<suffix>:<id>`` would select an adapter called
``<base>:<tenant>:<suffix>:<id>``. Three hooks, registered in SGLang's
``HookRegistry``, fix that on every OpenAI route:

* ``_parse_model_parameter`` (AROUND): the served name, the model's path
  (which SGLang's own clients send) and ``default`` (which SGLang's tests and
  many clients send; stock SGLang serves the base for any name without a colon)
  are the base model,
  ``"<served name>:<adapter>"`` is that adapter as before, and any other name
  is an adapter's whole name (``ft:...`` included). An unknown name is then
  refused by the adapter check, never served by the base model.
* ``OpenAIServingBase.handle_request`` (AROUND): before SGLang converts the
  request, the adapters it would use are checked against the caller's tenant
  (``HarliTokenizerManager.harli_adapter_error``); a refusal is OpenAI's 404
  ``model_not_found``, identical for "no such model" and "not yours", and an
  adapter the caller may serve whose files are damaged is a 503
  ``adapter_unavailable``. A route
  that cannot apply adapters (rerank, score, tokenize...) refuses any model
  but the base with the same 404 rather than answering from the base model.
  ``OpenAIServingResponses.create_responses`` (``/v1/responses``) does not pass
  through ``handle_request``, so the same check is hooked there too; without it
  another tenant's adapter answered 200 (found by the e2e test). SGLang's
  Responses route never applies an adapter (it builds its generate requests
  without ``lora_path``), so an adapter the caller may serve is handed to the
  tokenizer manager through :data:`ROUTE_ADAPTER`, which it applies to each
  request of that response (tool-call turns and background ones included).
* ``AnthropicServing.handle_messages`` and ``handle_count_tokens``
  (``/v1/messages``): the same check, answered in Anthropic's error shape with
  404 ``not_found_error``. Before, the chat route's refusal came back as a 400
  (or, streamed, as an error event after a 200 ``message_start``), and
  ``count_tokens`` answered 200 for any name.
* ``/v1/models`` and ``/v1/models/{model}`` are replaced by routes that call
  SGLang's own and show a tenant only the adapters it may serve (an operator
  sees all, as the worker's publisher needs).
"""

from __future__ import annotations

import asyncio
import contextvars

from fastapi.responses import JSONResponse
from starlette.requests import Request

from harli_sgl.jobs import principal as P
from harli_sgl.jobs.errors import ApiError, model_not_found

# Names of the base model besides the served name and the model path.
BASE_ALIASES = ("default",)
ANTHROPIC = "sglang.srt.entrypoints.anthropic.serving.AnthropicServing"
SERVING_BASE = "sglang.srt.entrypoints.openai.serving_base.OpenAIServingBase"
# The Responses API has its own entry point that bypasses ``handle_request``.
SERVING_RESPONSES = "sglang.srt.entrypoints.openai.serving_responses.OpenAIServingResponses"
MODELS_ROUTES = ("/v1/models", "/v1/models/{model:path}")

# The adapter a route that cannot pass ``lora_path`` itself (``/v1/responses``) serves;
# the tokenizer manager applies it to every request made while it is set.
ROUTE_ADAPTER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "harli_route_adapter", default=None)


def parse_model(original, self, model):
    tm = self.tokenizer_manager
    served = tm.served_model_name
    if not model or model == served or model.startswith(f"{served}:"):
        return original(self, model)
    if model == tm.model_path or model in BASE_ALIASES:
        return served, None
    return served, model.strip()


async def check_adapters(original, self, request, raw_request=None, *args, **kwargs):
    model = getattr(request, "model", None)
    if hasattr(request, "lora_path"):
        wanted = self._resolve_lora_path(model, request.lora_path) if model else request.lora_path
    else:
        wanted = self._parse_model_parameter(model)[1] if model else None
        if wanted is not None:  # this route only ever serves the base model
            return _refusal(ApiError(404, f"The model {model!r} does not exist or cannot be "
                                          f"served on this route; it serves only "
                                          f"{self.tokenizer_manager.served_model_name!r}.",
                                     param="model", code="model_not_found"))
    names = [wanted] if isinstance(wanted, str) else list(wanted or ())
    if names:
        error = await self.tokenizer_manager.harli_adapter_error(names)
        if error is not None:
            return _refusal(error)
    return await original(self, request, raw_request, *args, **kwargs)


async def serve_responses_adapter(original, self, request, raw_request=None, *args, **kwargs):
    model = getattr(request, "model", None)
    wanted = self._parse_model_parameter(model)[1] if model else None
    if wanted is None:
        return await original(self, request, raw_request, *args, **kwargs)
    error = await self.tokenizer_manager.harli_adapter_error([wanted])
    if error is not None:
        return _refusal(error)
    token = ROUTE_ADAPTER.set(wanted)
    try:
        return await original(self, request, raw_request, *args, **kwargs)
    finally:
        ROUTE_ADAPTER.reset(token)  # tasks the response started keep their own copy


async def check_anthropic_model(original, self, request, raw_request=None, *args, **kwargs):
    chat = self.openai_serving_chat
    model = getattr(request, "model", None)
    wanted = chat._parse_model_parameter(model)[1] if model else None
    error = None if wanted is None else await chat.tokenizer_manager.harli_adapter_error([wanted])
    if error is not None:
        return self._error_response(status_code=error.status,
                                    error_type="not_found_error" if error.status == 404 else "api_error",
                                    message=error.message)
    return await original(self, request, raw_request, *args, **kwargs)


def install_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for target, hook in ((f"{SERVING_BASE}._parse_model_parameter", parse_model),
                         (f"{SERVING_BASE}.handle_request", check_adapters),
                         (f"{SERVING_RESPONSES}.create_responses", serve_responses_adapter),
                         (f"{ANTHROPIC}.handle_messages", check_anthropic_model),
                         (f"{ANTHROPIC}.handle_count_tokens", check_anthropic_model)):
        HookRegistry.register(target, hook, HookType.AROUND)
    HookRegistry.apply_hooks()


def install_models_routes(app, store) -> None:
    """Replace SGLang's model routes on ``app`` by ones that show each tenant its own adapters."""
    from fastapi.routing import APIRoute

    listing = None
    for route in list(app.router.routes):
        if isinstance(route, APIRoute) and route.path in MODELS_ROUTES:
            if route.path == "/v1/models":
                listing = route.endpoint
            app.router.routes.remove(route)
    routes = ModelsRoutes(store, listing)
    app.add_api_route("/v1/models", routes.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model:path}", routes.retrieve_model, methods=["GET"])


class ModelsRoutes:
    """``/v1/models`` from SGLang's own listing, narrowed to what the caller may serve."""

    def __init__(self, store, sglang_listing) -> None:
        self.store = store
        self.sglang_listing = sglang_listing

    async def list_models(self, request: Request) -> dict:
        listed = _plain(await self.sglang_listing())
        caller = P.of_scope(request) or P.UNAUTHENTICATED
        if caller.operator:
            return listed
        adapters = [m["id"] for m in listed["data"] if m.get("parent")]
        visible = set(await asyncio.to_thread(self.store.visible_adapters, caller.tenant, adapters))
        listed["data"] = [m for m in listed["data"] if not m.get("parent") or m["id"] in visible]
        return listed

    async def retrieve_model(self, request: Request, model: str):
        for card in (await self.list_models(request))["data"]:
            if card["id"] == model:
                return card
        return _refusal(model_not_found(model))


def _plain(value):
    return value.model_dump() if hasattr(value, "model_dump") else value


def _refusal(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
