"""The audit log: one line per state-changing call, naming the tenant and the object.

Lines go to the ``harli_sgl.audit`` logger as ``audit action=<verb> tenant=<id>
object=<id> k=v ...``, so an operator can route them to their own sink with
standard logging configuration. They never carry a key: an API key is named by
its public id (``key-...``), and callers pass only ids and small values.
Values are quoted with ``repr`` when they hold spaces or ``=``, so a line
always splits back into its fields.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("harli_sgl.audit")


def record(action: str, tenant: str | None, obj: str | None, **details: object) -> None:
    fields = {"action": action, "tenant": tenant or "-", "object": obj or "-", **details}
    logger.info("audit %s", " ".join(f"{k}={_value(v)}" for k, v in fields.items()))


def _value(v: object) -> str:
    text = str(v)
    return repr(text) if (not text or any(c in text for c in " =\n\"'")) else text
