"""Slot policies by name: ``--harli-mode`` picks one of these."""

from __future__ import annotations

from harli_sgl.config import HarliConfig
from harli_sgl.core.policy.base import SlotPolicy
from harli_sgl.core.policy.baselines import GreedyPolicy, IdlePolicy, OffPolicy
from harli_sgl.core.policy.harli import HarliPolicy
from harli_sgl.core.policy.harli_serial import HarliSerialPolicy
from harli_sgl.core.policy.spatial import SpatialPolicy
from harli_sgl.core.policy.static import StaticPolicy

POLICIES: dict[str, type[SlotPolicy]] = {
    cls.name: cls for cls in (OffPolicy, GreedyPolicy, IdlePolicy, StaticPolicy, SpatialPolicy,
                               HarliSerialPolicy, HarliPolicy)
}


def make_policy(config: HarliConfig, predictor=None) -> SlotPolicy:
    try:
        cls = POLICIES[config.mode]
    except KeyError:
        raise ValueError(f"unknown slot policy {config.mode!r}; known: {sorted(POLICIES)}") from None
    return cls(config, predictor)
