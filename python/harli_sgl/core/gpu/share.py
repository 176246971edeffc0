"""Which share of the GPU each piece of finetune work gets, by what it runs beside.

The policy plans in shares (``Plan.share``; ``SlotContext.corun_share``); the
means (:mod:`harli_sgl.core.gpu.corun_means`) limits what a share can be:

* ``mps_green``: the worker holds green contexts at fixed steps (each SM count
  rounded down to the device's split granularity). A co-run beside decode gets
  the largest step not above the share the policy modelled, so decode never
  loses more SMs than predicted. A top-up (decode waits for it), a serial slot
  and an idle co-run (nothing decodes) get the whole device: the worker's plain
  stream, outside every green context.
* ``mps_fixed``: the worker's MPS cap was set at start; every piece runs at
  that share, serial slots included, and the status says so. The harvest's
  idle speed is then measured at that share, not at 1.0, and is labelled with it.
* ``serial``: no co-run, not even on an idle server (share 0; the policy then
  trains in serial slots, idle ones included); serial slots have the whole device.

UNTESTED on a GPU: the worker side (``worker/device_shares.py``) that turns a
share into a stream has never run; this decision is unit-tested.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from harli_sgl.core.gpu.corun_means import Means

STEPS = (0.25, 0.5, 0.75)  # plus the configured share; 1.0 is the plain stream
# cuDevSmResourceSplitByCount's granularity: SM groups are multiples of 8 on
# compute capability 9.x (H100/H200), of 2 on 8.x. 8 is safe on both.
SM_GRANULARITY = 8


class Purpose(Enum):
    CORUN = "corun"    # beside a decode iteration
    IDLE = "idle"      # co-running while nothing decodes
    TOPUP = "topup"    # the serial part of a hybrid iteration: decode waits
    SERIAL = "serial"  # a serial slot: decode waits


class ShareChoice(NamedTuple):
    share: float   # the fraction of the device's SMs the piece may use
    num_sms: int   # the green context's SM count; 0: the worker's plain stream


def green_steps(configured: float, sm_count: int, granularity: int = SM_GRANULARITY
                ) -> tuple[ShareChoice, ...]:
    """The green contexts the worker holds: one per distinct SM count, ascending."""
    out: dict[int, ShareChoice] = {}
    for share in sorted({*STEPS, configured}):
        if not 0.0 < share < 1.0:
            continue
        sms = int(share * sm_count) // granularity * granularity
        if granularity <= sms < sm_count and sms not in out:
            out[sms] = ShareChoice(sms / sm_count, sms)
    return tuple(out[k] for k in sorted(out))


def share_for(means: Means, purpose: Purpose, wanted: float, configured: float,
              sm_count: int = 0) -> ShareChoice:
    """The share a piece of ``purpose`` runs at, asked ``wanted`` by the policy."""
    whole = ShareChoice(1.0, 0)
    if means is Means.MPS_FIXED:
        return ShareChoice(configured, 0)
    if means is Means.SERIAL:
        # Decode waits for serial work; nothing co-runs, not even on an idle server
        # (a request arriving would time-slice with the piece in flight).
        return whole if purpose in (Purpose.TOPUP, Purpose.SERIAL) else ShareChoice(0.0, 0)
    if purpose is not Purpose.CORUN:
        return whole
    if wanted >= 1.0:
        return whole
    fitting = [s for s in green_steps(configured, sm_count) if s.share <= wanted + 1e-9]
    return fitting[-1] if fitting else ShareChoice(0.0, 0)


def corun_share(means: Means, configured: float, sm_count: int = 0) -> float:
    """The share the policy may plan co-runs beside decode at (0: serial only)."""
    return share_for(means, Purpose.CORUN, configured, configured, sm_count).share
