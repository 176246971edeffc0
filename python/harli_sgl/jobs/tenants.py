"""Tenants: who owns a file, a job and its adapter, and how much of the server each may use.

A tenant is a customer of a shared deployment. Every stored object carries the
id of the tenant that created it, and every API call acts for one tenant (the
one its key belongs to; see :mod:`harli_sgl.jobs.principal`). The tenant id is
part of fine-tuned model names (``ft:<base>:<tenant>:<suffix>:<id>``), so it is
restricted to characters that cannot split such a name or a path: lower-case
letters, digits, ``_`` and ``-``. Objects made before tenants existed belong to
:data:`DEFAULT_TENANT`, which is also the tenant of the server's ``--api-key``.

:class:`Limits` are a tenant's quotas. Each is ``None`` for "no limit"; a
tenant's own limits (set by an admin) win over the server's defaults
(``--harli-tenant-max-*``), field by field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

DEFAULT_TENANT = "default"
EVERY_TENANT = "*"  # an adapter shared with every tenant
MAX_TENANT_CHARS = 32
_TENANT = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_TENANT_CHARS - 1}}}")

LIMIT_NAMES = ("max_running_jobs", "max_queued_jobs", "max_stored_bytes")


def is_valid_tenant(value: object) -> bool:
    return isinstance(value, str) and _TENANT.fullmatch(value) is not None


def check_tenant(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise ``ValueError``."""
    if not is_valid_tenant(value):
        raise ValueError(f"a tenant id is 1-{MAX_TENANT_CHARS} characters of a-z, 0-9, '_' "
                         f"or '-', starting with a letter or digit; got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Limits:
    """A tenant's quotas; ``None`` means unlimited.

    Args:
        max_running_jobs: its jobs trained at once; the rest wait ``queued``.
        max_queued_jobs: its jobs waiting to run; creating one more is refused (429).
        max_stored_bytes: total bytes of its uploaded files; an upload past it is refused (429).
    """

    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    max_stored_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise ValueError(f"{name} must be an integer >= 0 or null, got {value!r}")

    def over(self, defaults: Limits) -> Limits:
        """These limits where set, ``defaults`` elsewhere."""
        return dataclasses.replace(defaults, **{n: getattr(self, n) for n in LIMIT_NAMES
                                                if getattr(self, n) is not None})

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)
