"""OpenAI-style API errors: one exception type that knows its HTTP status and body.

Everything the jobs API rejects becomes an :class:`ApiError`; the router turns it
into ``{"error": {"message", "type", "param", "code"}}`` with the status given
here. The module is deliberately free of FastAPI so request parsing and
validation that raise it stay engine- and framework-agnostic.

Error responses carry ``x-should-retry: false``: the official ``openai`` client
retries 409 (and 408/429/5xx) by default, and a request we rejected for its
content will not succeed on a retry.
"""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

NO_RETRY_HEADERS = {"x-should-retry": "false"}


class ApiError(Exception):
    """A request the API refuses, with everything needed to render the OpenAI error body.

    Args:
        status: HTTP status (4xx for client errors).
        message: human-readable, specific (names the field, the line, the id).
        param: the request field at fault, dotted for nested fields (``hyperparameters.n_epochs``).
        code: machine-readable code, e.g. ``model_not_found``.
        type: OpenAI error type; ``invalid_request_error`` for every 4xx.
    """

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    @property
    def headers(self) -> dict[str, str]:
        return dict(NO_RETRY_HEADERS) if self.status < 500 else {}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, param={self.param!r}, code={self.code!r})"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(what: str, object_id: object, param: str | None = None) -> ApiError:
    """404 for an id that names nothing (malformed ids included: they cannot exist)."""
    return ApiError(404, f"No such {what}: {object_id!r}", param=param, code="not_found")


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} exceeds the limit of {limit} bytes", code="payload_too_large")


def quota_exceeded(message: str, limit: str) -> ApiError:
    """429 naming the tenant's quota the request would exceed (in ``param`` and the message)."""
    return ApiError(429, message, param=limit, code="quota_exceeded")


def model_not_found(model: object) -> ApiError:
    """404 for a model the caller may not use: the same answer whether it exists or not."""
    return ApiError(404, f"The model {model!r} does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def server_error(message: str = "The server hit an internal error while handling the request") -> ApiError:
    return ApiError(500, message, type=SERVER_ERROR, code="internal_error")


def insufficient_storage() -> ApiError:
    """507: the server's disk is full. Nothing was stored; deleting files frees space."""
    return ApiError(507, "The server's disk is full, so nothing was stored. Free space (e.g. "
                    "delete files you no longer need with DELETE /v1/files/{file_id}) and retry.",
                    type=SERVER_ERROR, code="insufficient_storage")
