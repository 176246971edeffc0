"""Measured finetune speeds, in work units per ms, each an exponential moving average.

Four speeds answer four questions. *idle*: the current job on an idle server
(every core, no decode), harvest's denominator and a fleet's placement signal;
until it is measured the start-up profile's synthetic rate (*profile*) stands
in. *topup*: a hybrid top-up per ms decode was blocked for it. *corun*: pieces
on the worker's share beside decode. The harli policy tops up only where the
first beats the second.
"""

from __future__ import annotations

from harli_sgl.core.message.from_worker import SlotReport

# The idle speed is averaged over about 20 pieces: one piece's speed varies widely on
# a host shared with another instance, enough to place a whole burst of jobs on one
# instance.
IDLE_RATE_ALPHA = 0.05


def ema(old: float | None, value: float, alpha: float = 0.2) -> float:
    return value if old is None else (1 - alpha) * old + alpha * value


class FinetuneSpeeds:
    def __init__(self, profile_units_per_ms: float | None = None):
        self.idle_units_per_ms: float | None = None
        self.profile_units_per_ms = profile_units_per_ms
        self.topup_units_per_ms: float | None = None
        self.corun_units_per_ms: float | None = None

    @property
    def idle_rate(self) -> float | None:
        """The idle speed, or the start-up profile's until it is measured."""
        return self.idle_units_per_ms or self.profile_units_per_ms

    def slot_ran(self, msg: SlotReport, profiling: bool, server_idle: bool) -> None:
        """A serial slot's (or a free-run slice's) report."""
        if msg.units <= 0 or msg.duration_ms <= 0 or msg.slot_id < 0:
            return
        rate = msg.units / msg.duration_ms
        if profiling:
            self.profile_units_per_ms = ema(self.profile_units_per_ms, rate)
        elif server_idle:
            self.idle_units_per_ms = ema(self.idle_units_per_ms, rate, IDLE_RATE_ALPHA)

    def topup_ran(self, units: int, blocked_ms: float) -> None:
        self.topup_units_per_ms = ema(self.topup_units_per_ms, units / blocked_ms)

    def piece_ran(self, msg: SlotReport, share: float, on_every_core_while_idle: bool) -> None:
        """A co-run piece of a customer job, on ``share`` of the device."""
        if msg.units <= 0 or msg.duration_ms <= 0:
            return
        rate = msg.units / msg.duration_ms
        if 0.0 < share < 1.0:
            self.corun_units_per_ms = ema(self.corun_units_per_ms, rate)
        if on_every_core_while_idle:
            self.idle_units_per_ms = ema(self.idle_units_per_ms, rate, IDLE_RATE_ALPHA)
