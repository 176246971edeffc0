"""A tenant's quotas: the server's defaults come from its flags, a tenant's own from an admin.

Ground floor, beside ``config.py`` (whose ``--harli-tenant-max-*`` flags build
the defaults); tenants themselves are :mod:`harli_sgl.jobs.tenants`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

LIMIT_NAMES = ("max_running_jobs", "max_queued_jobs", "max_stored_bytes")


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
