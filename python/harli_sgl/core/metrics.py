"""Rolling co-location metrics: TPOT and SLO attainment, finetune throughput, slot sizes.

Windows are time-bounded (the last ``window_s`` seconds) so ``/harli/status``
describes the recent past, which is what an operator watching a dashboard and
the scheduler's feedback loop both need; lifetime totals are kept alongside.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class _Window:
    def __init__(self, window_s: float, maxlen: int = 20000):
        self.window_s = window_s
        self.items: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, value: float, now: float | None = None) -> None:
        self.items.append((time.monotonic() if now is None else now, value))

    def values(self, now: float | None = None) -> list[float]:
        now = time.monotonic() if now is None else now
        while self.items and now - self.items[0][0] > self.window_s:
            self.items.popleft()
        return [v for _, v in self.items]

    def clear(self) -> None:
        self.items.clear()


def _q(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


class ColocationMetrics:
    def __init__(self, slo_ms: float, window_s: float = 60.0, throughput_window_s: float = 30.0):
        self.slo_ms = slo_ms
        self.tpots = _Window(window_s)
        self.trained = _Window(throughput_window_s)
        self.slots_units = _Window(window_s)
        self.slots_ms = _Window(window_s)
        self.units = _Window(throughput_window_s)
        self.decode_ms = _Window(window_s)
        self.total_trained_tokens = 0
        # Units (a token through one layer's forward or backward, or the head) of job
        # pieces: trained tokens move only when a micro-batch's backward ends (hundreds of
        # tokens at once), units with every piece, so a short window reads its rate from them.
        self.total_units = 0
        self.total_slots = 0
        self.total_requests = 0
        self.total_violations = 0

    def request_finished(self, tpot_ms: float) -> None:
        self.tpots.add(tpot_ms)
        self.total_requests += 1
        self.total_violations += tpot_ms > self.slo_ms

    def slot_ran(self, units: int, duration_ms: float, trained_tokens: int,
                 for_job: bool = True) -> None:
        """A serial slot ran (``for_job``: a job's, not the start-up profile's synthetic work)."""
        self.total_slots += 1
        self.total_units += units if for_job else 0
        self.total_trained_tokens += trained_tokens
        self.trained.add(trained_tokens)
        self.units.add(units)
        self.slots_units.add(units)
        self.slots_ms.add(duration_ms)

    def corun_ran(self, units: int, trained_tokens: int) -> None:
        """A job's piece the worker ran beside decode (not a slot: no slot counters move)."""
        self.total_trained_tokens += trained_tokens
        self.total_units += units
        self.trained.add(trained_tokens)
        self.units.add(units)

    def decode_ran(self, ms: float) -> None:
        """Time one decode iteration kept the device busy (its own time, slots excluded)."""
        self.decode_ms.add(ms)

    def decode_busy_fraction(self) -> float:
        """Share of the last ``window_s`` seconds that decode iterations ran."""
        return min(1.0, sum(self.decode_ms.values()) / (self.decode_ms.window_s * 1000.0))

    def units_per_s(self) -> float:
        return sum(self.units.values()) / self.units.window_s

    def finetune_tokens_per_s(self) -> float:
        return sum(self.trained.values()) / self.trained.window_s

    def slo_attainment(self) -> float | None:
        tpots = self.tpots.values()
        return sum(t <= self.slo_ms for t in tpots) / len(tpots) if tpots else None

    def reset(self) -> None:
        """Forget windows (e.g. after the start-up profile's synthetic traffic)."""
        for w in (self.tpots, self.trained, self.units, self.slots_units, self.slots_ms,
                  self.decode_ms):
            w.clear()

    def status(self) -> dict:
        tpots = self.tpots.values()
        units, ms = self.slots_units.values(), self.slots_ms.values()
        return {
            "slo_attainment": self.slo_attainment(),
            "tpot_ms": {"p50": _q(tpots, 0.5), "p99": _q(tpots, 0.99), "requests": len(tpots)},
            "finetune_tokens_per_s": self.finetune_tokens_per_s(),
            # Serial slots in the last window_s (totals.slots counts them since start).
            "slots": {"count_in_window": len(units), "units_p50": _q(units, 0.5),
                      "units_p99": _q(units, 0.99), "ms_p50": _q(ms, 0.5), "ms_p99": _q(ms, 0.99)},
            "totals": {"trained_tokens": self.total_trained_tokens, "units": self.total_units,
                       "slots": self.total_slots,
                       "requests": self.total_requests, "slo_violations": self.total_violations},
            "window_s": self.tpots.window_s,
        }
