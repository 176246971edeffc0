"""Keep SGLang's ``--api-key`` and ``--admin-api-key`` out of responses and logs.

Stock SGLang 0.5.23 returns its resolved server args from ``GET /server_info``
(and the deprecated ``/get_server_info``), so any caller holding the normal key
reads the admin key there, and both keys appear again in ``launch_command``. At
start-up it also logs ``server_args=...`` with the keys in plain text. harli_sgl
redacts both through seams, touching no SGLang code:

* responses: the two routes of SGLang's module-global FastAPI ``app`` are
  replaced (before the server starts) by routes that call SGLang's own
  endpoint and redact what it returns, so the body keeps every other field;
* logs: a log-record factory (``logging.setLogRecordFactory``) replaces the
  key values in every record's message. A factory, not a handler filter,
  because SGLang's ``configure_logger`` re-creates the root handlers
  (``basicConfig(force=True)``) after harli_sgl's launcher has run.

Redaction is by field name (any ``*api_key`` field) and by value (each key's
text wherever it appears, e.g. ``--api-key <key>`` in ``launch_command``).

Tenants' keys are not known to the process (the store holds their hashes), so
they are redacted by shape: anything that looks like a harli key (``hk-`` and
its random text), and the value of any query parameter named like a credential
(``api_key``, ``key``, ``token``...). A client that puts its key in the URL is
refused (keys are read from the ``Authorization`` header only), but uvicorn's
access log records the query string, so without this the key reached the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"
SERVER_INFO_ROUTES = ("/server_info", "/get_server_info")
# Shorter keys are still redacted by field name and flag, but replacing a 1-3
# character value everywhere would mangle every log line that contains it.
MIN_VALUE_CHARS = 4
_FLAG = re.compile(r"(--(?:admin-)?api-key(?:=|\s+))(\S+)")
_TENANT_KEY = re.compile(r"hk-[A-Za-z0-9_-]{8,}")
_QUERY_CREDENTIAL = re.compile(
    r"([?&](?:api[_-]?key|key|token|access[_-]?token|auth|authorization|bearer)=)[^&\s\"']+",
    re.IGNORECASE)
_FIELD = re.compile(r"""(['"]?(?:admin_)?api_key['"]?\s*[:=]\s*)(['"])(.*?)\2""")


def secrets_of(server_args: Any) -> tuple[str, ...]:
    """The key values SGLang was started with (empty when none were given)."""
    keys = (getattr(server_args, "api_key", None), getattr(server_args, "admin_api_key", None))
    return tuple(k for k in keys if k)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= MIN_VALUE_CHARS:
            text = text.replace(secret, REDACTED)
    text = _FLAG.sub(lambda m: m.group(1) + REDACTED, text)
    text = _TENANT_KEY.sub("hk-" + REDACTED, text)
    text = _QUERY_CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, text)
    return _FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """A copy of a JSON-like value with every key field and key value redacted."""
    if isinstance(value, dict):
        return {k: (REDACTED if v is not None else None)
                if isinstance(k, str) and k.endswith("api_key") else redact(v, secrets)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def install_log_redaction(secrets: tuple[str, ...]) -> None:
    """Redact the keys from every log record this process creates from now on."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_harli_redacts", None) == secrets:
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record  # a broken format string: let the handler report it as usual
        clean = redact_text(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory._harli_redacts = secrets  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def install_server_info_redaction(app: Any, secrets: tuple[str, ...]) -> None:
    """Replace SGLang's server-info routes on ``app`` by redacting wrappers of them."""
    from fastapi.routing import APIRoute

    for route in list(app.router.routes):
        if isinstance(route, APIRoute) and route.path in SERVER_INFO_ROUTES:
            app.router.routes.remove(route)
            app.add_api_route(route.path, _redacting(route.endpoint, secrets),
                              methods=sorted(route.methods), name=route.name,
                              include_in_schema=route.include_in_schema)


def _redacting(endpoint, secrets: tuple[str, ...]):
    async def redacted_endpoint():
        return redact(await endpoint(), secrets)

    redacted_endpoint.__doc__ = endpoint.__doc__
    return redacted_endpoint
