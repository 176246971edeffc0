"""Every failure of a harli_sgl route, answered as an OpenAI error body.

harli_sgl's routes are mounted on SGLang's FastAPI app, whose exception handlers
(and 422 validation responses) are not ours to change. So each route is an
:class:`OpenAIErrorRoute`, which catches errors around the endpoint itself and
answers with OpenAI's ``{"error": {message, type, param, code}}`` body: API
errors with their 4xx, store refusals mapped to theirs (:func:`as_api_error`),
anything unexpected as a logged 500 that says nothing about the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from harli_sgl.jobs import ids
from harli_sgl.jobs.errors import (ApiError, bad_request, insufficient_storage, quota_exceeded,
                                  server_error)
from harli_sgl.jobs.store import (FileContentError, FileInUseError, InvalidTransitionError,
                                  NotFoundError, QuotaExceededError, is_storage_full)

logger = logging.getLogger(__name__)


def as_api_error(exc: Exception) -> ApiError | None:
    """Map a refusal raised below the router to its HTTP form; None for genuine bugs."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{}])[0]
        loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body")]
        return bad_request(f"Invalid {'.'.join(loc) or 'request'}: {first.get('msg', 'invalid value')}",
                           param=".".join(loc) or None)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return ApiError(exc.status_code, str(exc.detail))
    if isinstance(exc, ClientDisconnect):
        return bad_request("the client disconnected before sending the whole request")
    if isinstance(exc, NotFoundError) and exc.param is not None:
        # The request refers to something that does not exist: the request is wrong.
        return bad_request(str(exc), param=exc.param,
                           code="invalid_cursor" if exc.param == "after" else f"invalid_{exc.param}")
    if isinstance(exc, (NotFoundError, ids.InvalidId)):
        return ApiError(404, str(exc), code="not_found")
    if isinstance(exc, InvalidTransitionError):
        return bad_request(str(exc), code="invalid_job_state")
    if isinstance(exc, FileInUseError):
        return ApiError(409, str(exc), code="file_in_use")
    if isinstance(exc, FileContentError):
        return server_error(str(exc))
    if isinstance(exc, QuotaExceededError):
        return quota_exceeded(str(exc), exc.limit)
    if is_storage_full(exc):
        logger.warning("refused a request: the disk is full (%s)", exc)
        return insufficient_storage()
    return None


class OpenAIErrorRoute(APIRoute):
    """An APIRoute that renders every failure of its endpoint as an OpenAI error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = as_api_error(exc)
                if error is None:
                    logger.exception("%s %s failed", request.method, request.url.path)
                    error = server_error()
                return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

        return handle
