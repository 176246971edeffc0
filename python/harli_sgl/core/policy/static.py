"""``static``: the same slot every iteration, with no model of its cost.

The slot size (``--harli-static-slot-units``) is what an operator would tune
offline: the benchmark sets it to the largest size that still holds the SLO at
the highest load it measures. The wall-clock bound only guards against a
pathological overrun; it is deliberately loose so the policy stays static.
"""

from __future__ import annotations

from harli_sgl.core.policy.base import Grant, SlotContext, SlotPolicy

OVERRUN_GUARD_MS = 1000.0


class StaticPolicy(SlotPolicy):
    name = "static"

    def grant(self, ctx: SlotContext) -> Grant | None:
        units = self.config.static_slot_units
        return Grant(units, OVERRUN_GUARD_MS) if units > 0 else None
