"""Operator controls: ``POST /harli/policy`` and ``/harli/profile`` reach the coordinator here.

Validated once, here: ``profile`` (bool), ``mode`` (one of MODES, by name),
``static_slot_units`` (int >= 0) and ``prefill_cpus`` (decode or all). A
change of mode builds the new policy by name from the registry; the other
knobs change the config the policy reads.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from harli_sgl.core.policy.registry import make_policy

if TYPE_CHECKING:
    from harli_sgl.core.coordinator.coordinator import SlotCoordinator

logger = logging.getLogger(__name__)

CONTROLS = ("profile", "mode", "static_slot_units", "prefill_cpus")


def apply(c: SlotCoordinator, knobs: dict) -> bool:
    """Operator controls, validated here once: ``profile`` (bool), ``mode`` (one of
    MODES, by name), ``static_slot_units`` (int >= 0) and ``prefill_cpus`` (decode or
    all). All or nothing."""
    if not knobs or not set(knobs) <= set(CONTROLS):
        logger.warning("harli: unknown controls %s", sorted(set(knobs) - set(CONTROLS)))
        return False
    changes = {k: knobs[k] for k in ("mode", "static_slot_units", "prefill_cpus") if k in knobs}
    if changes:
        try:
            config = dataclasses.replace(c.config, **changes)
        except (TypeError, ValueError) as e:
            logger.warning("harli: rejected controls %s: %s", knobs, e)
            return False
        if config.finetune_enabled and c.supervisor is None:
            logger.warning("harli: this server was started without a finetune worker")
            return False
    if "profile" in knobs:
        c.set_profiling(bool(knobs["profile"]))
    if changes:
        c.config = config
        c.set_policy(make_policy(config, c.predictor))
        logger.info("harli: policy now %s (static_slot_units=%d)", config.mode,
                    config.static_slot_units)
    return True
