"""The body deadline on a real uvicorn server, driven by raw sockets (issue 19, item 14)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harli_sgl.sglang.body_deadline import BodyDeadline, body_deadline_s


async def echo(request: Request):
    body = await request.body()
    await asyncio.sleep(float(request.query_params.get("think", 0)))  # after the body: no deadline
    return JSONResponse({"bytes": len(body)})


@pytest.fixture(scope="module")
def base(monkeypatch_module):
    monkeypatch_module.setenv("HARLI_BODY_TIMEOUT_S", "1")
    app = BodyDeadline(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), max_body_bytes=1 << 20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield ("127.0.0.1", port)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def request(addr, declared: int, chunks: list[bytes], pause_s: float, path="/echo") -> tuple[bytes, bool]:
    """Send a POST whose body comes in ``chunks`` ``pause_s`` apart; the answer and whether the
    server closed the connection after it."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode())
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause_s)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                return answer, True
            answer += data
        s.settimeout(3)
        try:
            closed = s.recv(1) == b""
        except (TimeoutError, socket.timeout):
            closed = False
        return answer, closed


def test_a_trickling_body_is_answered_408_and_its_connection_closed(base):
    start = time.monotonic()
    answer, closed = request(base, 100, [b"x"] * 100, pause_s=0.1)  # 10 s to send 100 bytes
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
    assert closed
    assert time.monotonic() - start < 8  # cut at the deadline, not when the client finished


def test_a_prompt_body_passes_and_the_app_may_take_its_time_after_it(base):
    answer, closed = request(base, 10, [b"0123456789"], pause_s=0, path="/echo?think=1.5")
    assert answer.startswith(b"HTTP/1.1 200") and b'"bytes":10' in answer, answer
    assert not closed  # keep-alive as usual


def test_the_deadline_grows_with_the_declared_size(monkeypatch):
    monkeypatch.setenv("HARLI_BODY_TIMEOUT_S", "60")
    assert body_deadline_s(0, 64 << 20) == 60
    assert body_deadline_s(32 << 20, 64 << 20) == 92
    assert body_deadline_s(1 << 40, 64 << 20) == body_deadline_s(None, 64 << 20) == 124
