"""``spatial``: a fixed partition; the worker always trains on its share.

What a static MPS split (or a fixed core split) does: the worker co-runs on its
share of the device all the time, whatever the load, with no model of the
interference it causes and no serial slots. Decode keeps the rest. It is the
spatial counterpart of ``static`` and the baseline ``harli``'s concurrent
arrangement is measured against. Without a share (a single core, or
``--harli-cpu-split none``) it trains nothing.
"""

from __future__ import annotations

from harli_sgl.core.policy.base import Arrangement, Grant, Plan, SlotContext, SlotPolicy
from harli_sgl.core.policy.decision import Decision


class SpatialPolicy(SlotPolicy):
    name = "spatial"
    beside_decode = True
    fixed_partition = True

    def plan(self, ctx: SlotContext) -> Plan:
        if ctx.corun_share <= 0:
            return Plan(Arrangement.NONE, decision=Decision.NO_SHARE)
        return Plan(Arrangement.CONCURRENT, share=ctx.corun_share, decision=Decision.PARTITION)

    def grant(self, ctx: SlotContext) -> Grant | None:
        return None
