"""Tenants: who owns a file, a job and its adapter, and how much of the server each may use.

A tenant is a customer of a shared deployment. Every stored object carries the
id of the tenant that created it, and every API call acts for one tenant (the
one its key belongs to; see :mod:`harli_sgl.jobs.principal`). The tenant id is
part of fine-tuned model names (``ft:<base>:<tenant>:<suffix>:<id>``), so it is
restricted to characters that cannot split such a name or a path: lower-case
letters, digits, ``_`` and ``-``. Objects made before tenants existed belong to
:data:`DEFAULT_TENANT`, which is also the tenant of the server's ``--api-key``.

:class:`Limits` (defined on the ground floor, ``harli_sgl/limits.py``, since the
server's flags carry the defaults) are a tenant's quotas. Each is ``None`` for "no limit"; a
tenant's own limits (set by an admin) win over the server's defaults
(``--harli-tenant-max-*``), field by field.
"""

from __future__ import annotations

import re

from harli_sgl.limits import LIMIT_NAMES, Limits

__all__ = ["DEFAULT_TENANT", "EVERY_TENANT", "LIMIT_NAMES", "Limits", "MAX_TENANT_CHARS",
           "check_tenant", "is_valid_tenant"]

DEFAULT_TENANT = "default"
EVERY_TENANT = "*"  # an adapter shared with every tenant
MAX_TENANT_CHARS = 32
_TENANT = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_TENANT_CHARS - 1}}}")



def is_valid_tenant(value: object) -> bool:
    return isinstance(value, str) and _TENANT.fullmatch(value) is not None


def check_tenant(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise ``ValueError``."""
    if not is_valid_tenant(value):
        raise ValueError(f"a tenant id is 1-{MAX_TENANT_CHARS} characters of a-z, 0-9, '_' "
                         f"or '-', starting with a letter or digit; got {value!r}")
    return value  # type: ignore[return-value]
