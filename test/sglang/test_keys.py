"""harli_sgl's own calls carry the key SGLang's auth wants, and never leak either key.

* Every combination of ``--api-key`` / ``--admin-api-key`` (issue 12, item 3): the
  headers :mod:`harli_sgl.auth_headers` builds are checked against SGLang's own auth
  decision (``sglang.srt.utils.auth.decide_request_auth``) for the routes harli_sgl
  calls: ``/v1/models``, ``/generate`` and ``/harli/status`` (normal) and
  ``/load_lora_adapter`` and ``/harli/profile`` (admin-optional).
* Redaction (item 6): responses and log records lose both keys, whatever shape they
  take (a field, a flag in ``launch_command``, a dict repr in a log line).
"""

from __future__ import annotations

import itertools
import logging

import pytest
from sglang.srt.utils.auth import AuthLevel, decide_request_auth

from harli_sgl.auth_headers import admin_headers, normal_headers
from harli_sgl.sglang import redact

KEYS = (None, "normal-key-123")
ADMIN_KEYS = (None, "admin-key-456")


@pytest.mark.parametrize("api_key, admin_api_key", list(itertools.product(KEYS, ADMIN_KEYS)))
def test_each_route_gets_the_key_sglang_accepts(api_key, admin_api_key):
    for path, level, headers in (
            ("/v1/models", AuthLevel.NORMAL, normal_headers(api_key)),
            ("/harli/status", AuthLevel.NORMAL, normal_headers(api_key)),
            ("/load_lora_adapter", AuthLevel.ADMIN_OPTIONAL, admin_headers(api_key, admin_api_key)),
            ("/harli/profile", AuthLevel.ADMIN_OPTIONAL, admin_headers(api_key, admin_api_key))):
        decision = decide_request_auth(method="POST", path=path,
                                       authorization_header=headers.get("Authorization"),
                                       api_key=api_key, admin_api_key=admin_api_key,
                                       auth_level=level)
        assert decision.allowed, (path, api_key, admin_api_key, headers)


def test_the_normal_key_alone_is_refused_on_admin_routes_when_both_are_set():
    """Why publishing failed with 401 before: SGLang wants the admin key there."""
    decision = decide_request_auth(method="POST", path="/load_lora_adapter",
                                   authorization_header="Bearer normal-key-123",
                                   api_key="normal-key-123", admin_api_key="admin-key-456",
                                   auth_level=AuthLevel.ADMIN_OPTIONAL)
    assert not decision.allowed


SECRETS = ("normal-key-123", "admin-key-456")


def test_server_info_bodies_are_redacted():
    info = {"api_key": "normal-key-123", "admin_api_key": "admin-key-456", "port": 30000,
            "launch_command": "python -m harli_sgl.launch_server --api-key normal-key-123 "
                              "--admin-api-key=admin-key-456 --port 30000",
            "internal_states": [{"nested": {"api_key": None, "note": "admin-key-456"}}]}
    out = redact.redact(info, SECRETS)
    assert out["api_key"] == out["admin_api_key"] == "<redacted>" and out["port"] == 30000
    assert out["launch_command"] == ("python -m harli_sgl.launch_server --api-key <redacted> "
                                     "--admin-api-key=<redacted> --port 30000")
    assert out["internal_states"] == [{"nested": {"api_key": None, "note": "<redacted>"}}]
    assert info["api_key"] == "normal-key-123"  # a copy; the original is untouched


def test_short_keys_are_still_redacted_where_they_are_named():
    text = "server_args={'api_key': 'ab', 'admin_api_key': 'cd', 'port': 3} argv: --api-key ab"
    assert redact.redact_text(text, ("ab", "cd")) == (
        "server_args={'api_key': '<redacted>', 'admin_api_key': '<redacted>', 'port': 3} "
        "argv: --api-key <redacted>")


def test_log_records_are_redacted_whatever_handler_is_installed_later(caplog):
    previous = logging.getLogRecordFactory()
    try:
        redact.install_log_redaction(SECRETS)
        redact.install_log_redaction(SECRETS)  # idempotent: one wrapper, not two
        with caplog.at_level(logging.INFO):
            logging.getLogger("sglang.srt.entrypoints.engine").info(
                "server_args=%s", {"api_key": "normal-key-123", "admin_api_key": "admin-key-456"})
            logging.getLogger("x").info("plain %d", 7)
        assert caplog.messages == [
            "server_args={'api_key': '<redacted>', 'admin_api_key': '<redacted>'}", "plain 7"]
    finally:
        logging.setLogRecordFactory(previous)


@pytest.mark.parametrize("line", [
    '127.0.0.1:5000 - "GET /v1/files?api_key=hk-AbC_d-0123456789abcdefghijklmnopqrstuvwxyz01 HTTP/1.1" 401',
    '127.0.0.1:5000 - "GET /v1/models?limit=2&token=secret-value-99 HTTP/1.1" 401',
    '127.0.0.1:5000 - "POST /generate?Authorization=Bearer%20abcd1234 HTTP/1.1" 401',
    "a tenant key hk-zzzzzzzzzzzzzzzzzzzz pasted into a message",
])
def test_tenant_keys_and_query_credentials_are_redacted_by_shape(line):
    """Tenants' keys are unknown to the process (stored hashed): uvicorn's access log line
    for a key sent in the URL kept it (issue 19, item 8)."""
    clean = redact.redact_text(line, SECRETS)
    for secret in ("hk-AbC_d-0123456789", "secret-value-99", "abcd1234", "hk-zzzzzzzz"):
        assert secret not in clean
    assert "<redacted>" in clean
    if "limit=2" in line:
        assert "limit=2&token=<redacted>" in clean  # other parameters stay readable
