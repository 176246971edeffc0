"""Who is calling: the principal an HTTP request acts for, and where code below finds it.

The tenant-auth middleware (:mod:`harli_sgl.sglang.tenant_auth`) decides, from
the request's bearer key, which :class:`Principal` it acts for, and sets it for
the rest of the request in two places: the ASGI scope (``scope["harli.principal"]``,
what route handlers read through :func:`of_scope`) and the context variable
:data:`CURRENT` (what SGLang's TokenizerManager reads, where no request object
reaches reliably). Both are set before SGLang's own routes run, and the tasks a
request starts (a streaming body) inherit the context variable.

Three kinds of principal:

* ``admin``: the server's ``--admin-api-key``;
* ``server_key``: the server's ``--api-key``, which is the key of the default
  tenant and keeps every right it had before tenants (all of SGLang's routes);
* ``tenant``: a key from the store, which reaches only the tenant routes.

``operator`` marks who may see and steer the whole server (the detailed
``/harli/status``, every adapter in ``/v1/models``): the admin key, or the
server's key when no admin key is configured, as in SGLang's own rule for
admin-optional routes.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from harli_sgl.jobs.tenants import DEFAULT_TENANT

ADMIN, SERVER_KEY, TENANT = "admin", "server_key", "tenant"
SCOPE_KEY = "harli.principal"


@dataclass(frozen=True)
class Principal:
    tenant: str
    kind: str
    operator: bool = False


# The principal of the request being served; None outside a request.
CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "harli_principal", default=None)

# What routes act for when no middleware set a principal (a server without tenants).
UNAUTHENTICATED = Principal(DEFAULT_TENANT, SERVER_KEY, operator=True)


def of_scope(scope: Any) -> Principal | None:
    """The principal the middleware set on an ASGI scope (or a Starlette ``Request``)."""
    scope = getattr(scope, "scope", scope)
    return scope.get(SCOPE_KEY)
