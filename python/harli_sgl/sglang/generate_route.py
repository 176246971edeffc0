"""``/generate`` refuses a request before it answers, streaming or not.

SGLang's ``serve_generate_request`` returns its ``StreamingResponse`` (status
200) before the tokenizer manager looks at the request, so a streamed request
for another tenant's adapter, an unknown one or a client-set ``lora_id`` was
refused *inside* a 200 stream, which clients read as success; and a refused
non-streamed request got SGLang's bare ``{"error": {"message"}}``. This AROUND
hook (SGLang's ``HookRegistry``; the route looks the function up by name, so it
calls the hooked one) runs the tokenizer manager's own check
(:meth:`HarliTokenizerManager.harli_request_error`) first and answers a refusal
with its status and OpenAI's error body. The tokenizer manager checks again
when the request runs: this hook only moves the answer earlier.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

TARGET = "sglang.srt.entrypoints.http_server.serve_generate_request"


async def refuse_before_answering(original, obj, request):
    from sglang.srt.entrypoints.http_server import get_global_state

    tm = get_global_state().tokenizer_manager
    check = getattr(tm, "harli_request_error", None)
    error = await check(obj) if check is not None else None
    if error is not None:
        # The one line the operator gets per refusal, as SGLang logs its own.
        logger.error("harli: /generate refused (%d): %s", error.status, error.message)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    return await original(obj, request)


def install_hook() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, refuse_before_answering, HookType.AROUND)
    HookRegistry.apply_hooks()
