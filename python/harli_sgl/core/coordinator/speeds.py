"""Measured finetune speeds, in work units per ms.

Six speeds answer five questions. *idle*: the current job on an idle server
(every core, no decode), harvest's denominator and a fleet's placement signal;
until it is measured the start-up profile's synthetic rate (*profile*) stands
in (both exponential moving averages). *topup*: hybrid top-ups per ms decode
was blocked for them. *corun*: pieces on the worker's share beside decode. The
harli policy tops up only where the first beats the second, so those two are
one estimator over one window: total units over total ms of what ran in the
last ``SPEED_WINDOW_S`` (audit of issue 18: an unweighted mean per co-run piece
let short pieces inflate the co-run speed to 13.6-46 units/ms where the trace
gave 10.9 for the same run). *idle on every core* and *idle on the share*: the
same estimator for co-run pieces while nothing decodes, which the harli policy
compares to decide whether the idle worker is worth spreading over every core
(on the 2-core host it was not: 7.3-8.2 units/ms on both cores against 7.2-9.4
on one, in all nine ``harli`` runs of the 2026-12-02 co-location trace).
"""

from __future__ import annotations

import time
from collections import deque

from harli_sgl.core.message.from_worker import SlotReport

# The idle speed is averaged over about 20 pieces: one piece's speed varies widely on
# a host shared with another instance, enough to place a whole burst of jobs on one
# instance.
IDLE_RATE_ALPHA = 0.05


# The window the top-up and co-run speeds are both measured over.
SPEED_WINDOW_S = 30.0
# Piece time an idle speed needs in the window before it is trusted (a piece is ~30 ms
# on one core, so ~50 pieces): the idle comparison re-measures every core for about
# this long once per window, since its last measurement expires with the window.
IDLE_SPEED_MIN_MS = 1500.0


class RateWindow:
    """Total units over total ms of what ran in the last ``SPEED_WINDOW_S``."""

    def __init__(self, window_s: float = SPEED_WINDOW_S):
        self.window_s = window_s
        self._rows: deque[tuple[float, int, float]] = deque()  # (ended at, units, ms)
        self._units = 0
        self._ms = 0.0

    def add(self, ended_at: float, units: int, ms: float) -> None:
        self._rows.append((ended_at, units, ms))
        self._units += units
        self._ms += ms

    def rate(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        rows = self._rows
        while rows and now - rows[0][0] > self.window_s:
            _, units, ms = rows.popleft()
            self._units -= units
            self._ms -= ms
        if not rows or self._ms <= 0:
            return None
        return self._units / self._ms

    def rate_over(self, min_ms: float, now: float | None = None) -> float | None:
        """The rate, once at least ``min_ms`` of work is in the window (else None)."""
        rate = self.rate(now)
        return rate if rate is not None and self._ms >= min_ms else None


def ema(old: float | None, value: float, alpha: float = 0.2) -> float:
    return value if old is None else (1 - alpha) * old + alpha * value


class FinetuneSpeeds:
    def __init__(self, profile_units_per_ms: float | None = None):
        self.idle_units_per_ms: float | None = None
        self.profile_units_per_ms = profile_units_per_ms
        self.topups = RateWindow()
        self.corun_pieces = RateWindow()
        self.idle_every_core = RateWindow()
        self.idle_share = RateWindow()

    @property
    def topup_units_per_ms(self) -> float | None:
        """Top-up units per ms the scheduler was blocked for them, over the window."""
        return self.topups.rate()

    @property
    def corun_units_per_ms(self) -> float | None:
        """Co-run units (on the worker's share) per ms of those pieces, over the window."""
        return self.corun_pieces.rate()

    @property
    def idle_every_core_units_per_ms(self) -> float | None:
        """Co-run pieces on every core of the idle server, once enough ran in the window."""
        return self.idle_every_core.rate_over(IDLE_SPEED_MIN_MS)

    @property
    def idle_share_units_per_ms(self) -> float | None:
        """Co-run pieces on the worker's share of the idle server, once enough ran."""
        return self.idle_share.rate_over(IDLE_SPEED_MIN_MS)

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

    def topup_ran(self, units: int, blocked_ms: float, ended_at: float | None = None) -> None:
        if units > 0 and blocked_ms > 0:
            self.topups.add(time.monotonic() if ended_at is None else ended_at, units, blocked_ms)

    def piece_ran(self, msg: SlotReport, share: float, server_idle: bool) -> None:
        """A co-run piece of a customer job, on ``share`` of the device; ``server_idle``:
        nothing decoded while it ran."""
        if msg.units <= 0 or msg.duration_ms <= 0:
            return
        ended = msg.ended_at or time.monotonic()
        if server_idle and share >= 1.0:
            self.idle_units_per_ms = ema(self.idle_units_per_ms, msg.units / msg.duration_ms,
                                         IDLE_RATE_ALPHA)
            self.idle_every_core.add(ended, msg.units, msg.duration_ms)
        elif 0.0 < share < 1.0:
            window = self.idle_share if server_idle else self.corun_pieces
            window.add(ended, msg.units, msg.duration_ms)
