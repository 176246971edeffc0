"""The baseline policies Harli is compared against (docs/usage.md, Modes).

* ``off``    -- no finetuning at all: the QoS reference.
* ``greedy`` -- the worker trains flat out, uncoordinated (free-run mode).
* ``idle``   -- temporal sharing: train only while no request runs or waits.
"""

from __future__ import annotations

from harli_sgl.core.policy.base import Grant, SlotContext, SlotPolicy

# An idle slot's unit budget is bounded by its time budget alone.
UNBOUNDED_UNITS = 1 << 40


class OffPolicy(SlotPolicy):
    name = "off"
    lends_pool = False

    def grant(self, ctx: SlotContext) -> Grant | None:
        return None


class GreedyPolicy(SlotPolicy):
    name = "greedy"
    free_run = True
    beside_decode = True

    def grant(self, ctx: SlotContext) -> Grant | None:
        return None


class IdlePolicy(SlotPolicy):
    name = "idle"

    def grant(self, ctx: SlotContext) -> Grant | None:
        if ctx.running or ctx.waiting:
            return None
        return Grant(UNBOUNDED_UNITS, self.config.idle_slot_ms)
