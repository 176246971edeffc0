"""A request body must arrive in bounded time, or the request is answered 408.

uvicorn bounds idle keep-alive connections but not the time a request's body
takes: 30 connections trickling 3 bytes a second were held indefinitely, and
enough of them exhaust the server's file handles (it already logs "Fail to set
RLIMIT_NOFILE" on these hosts), refusing everyone. This ASGI middleware gives
each body a deadline: ``HARLI_BODY_TIMEOUT_S`` (60 s) plus one second per MiB
the request declares in ``Content-Length`` (a chunked body is allowed the
upload limit's worth), so an honest 64 MiB upload needs about 0.5 MiB/s. Past
the deadline it answers 408 ``request_timeout`` itself, tells the application
the client went away (``http.disconnect``), and drops whatever the application
still sends; uvicorn then closes the connection, since a request whose body
was never read to the end cannot be followed by another on it.

The deadline covers only the body: once it has arrived, the application's
later ``receive`` calls (waiting for a disconnect under a long stream) pass
through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging

from harli_sgl import env

logger = logging.getLogger(__name__)

MIB = 1 << 20
SECONDS_PER_MIB = 1.0


def body_deadline_s(content_length: int | None, max_body_bytes: int) -> float:
    """Seconds a body of ``content_length`` bytes (None: chunked) may take to arrive."""
    size = max_body_bytes if content_length is None else min(content_length, max_body_bytes)
    return env.BODY_TIMEOUT_S.get() + SECONDS_PER_MIB * size / MIB


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return max(int(value), 0)
            except ValueError:
                return None
    return None


class BodyDeadline:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body_deadline_s(_content_length(scope), self.max_body_bytes)
        state = {"body_done": False, "timed_out": False, "started": False}

        async def guarded_send(message) -> None:
            if state["timed_out"]:
                return  # the 408 has been sent; the application's answer has nowhere to go
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        async def guarded_receive():
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                await self._time_out(scope, send, state)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        await self.app(scope, guarded_receive, guarded_send)

    async def _time_out(self, scope, send, state) -> None:
        logger.warning("harli: %s %s: the request body did not arrive in time; answered 408",
                       scope.get("method"), scope.get("path"))
        if not state["started"]:
            body = json.dumps({"error": {
                "message": "The request body did not arrive in time; send it faster or in "
                           "smaller requests.",
                "type": "invalid_request_error", "param": None, "code": "request_timeout"}}).encode()
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        state["timed_out"] = True
