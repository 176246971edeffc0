"""The scheduler's view of the concurrent arrangement: is the worker co-running, and beside what.

While co-running, the worker runs piece after piece on its share and reports
each one with its start and end (``time.monotonic()``, one clock for every
process of the host). :meth:`CoRunTracker.overlap` lays those spans over a
scheduler iteration and says which fraction of its decode time ran beside
training, by the kind of piece: that is what the concurrent stage of the
predictor learns from, and what the end-to-end tests check (overlap from
timestamps, not from a flag). A piece still running when the iteration closes
has not reported yet; while the worker is co-running with work, the time since
its last reported piece counts as overlapped, with that piece's kind. Not when
co-running began inside the iteration: plans are made after an iteration's
forward (from its results, and under SGLang's overlap loop only after a drain),
so a worker started there ran beside the scheduler's bookkeeping, not beside
decode. Counting that tail (0.3-0.4 ms) made every calibration iteration of a
14 ms model look co-run (overlap 0.02-0.03), so stage 1 learned nothing from
them while a job co-ran.

It also keeps the stop protocol's books (``CoRunStop`` -> ``CoRunStopped``: the
worker stops at its next piece boundary; the latency from the request to that
boundary is the stop latency) and how much time each arrangement took.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import NamedTuple

import numpy as np

from harli_sgl.core.iteration import CoRunOverlap, SlotWork


class PieceSpan(NamedTuple):
    start: float
    end: float
    work: SlotWork


def _intersect(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class CoRunTracker:
    def __init__(self):
        self.active = False
        self.share = 0.0
        self.cpus: tuple[int, ...] = ()
        self.synthetic = False
        self.started_at: float | None = None
        self.pieces: deque[PieceSpan] = deque(maxlen=512)
        self._seq = 0
        self.stopping: tuple[int, float] | None = None  # (seq, requested at)
        self.stop_latency_ms: deque[float] = deque(maxlen=500)
        self.time_ms: Counter[str] = Counter()
        self.trained_tokens = 0

    # -- state changes ---------------------------------------------------------------

    def started(self, share: float, cpus: tuple[int, ...], now: float, synthetic: bool = False) -> None:
        """Co-running (re)starts; a new share or new cores for a running worker is no new start."""
        if not self.active:
            self.started_at = now
        self.active, self.share, self.cpus, self.synthetic = True, share, cpus, synthetic

    def stop_requested(self, now: float) -> int:
        self._seq += 1
        self.active = False
        self.stopping = (self._seq, now)
        return self._seq

    def stopped(self, seq: int, stopped_at: float) -> None:
        if self.stopping is not None and self.stopping[0] == seq:
            self.stop_latency_ms.append(max(0.0, (stopped_at - self.stopping[1]) * 1000.0))
            self.stopping = None

    def worker_gone(self) -> None:
        self.active = False
        self.stopping = None

    def on_piece(self, started_at: float, ended_at: float, work: SlotWork,
                 trained_tokens: int) -> None:
        self.pieces.append(PieceSpan(started_at, ended_at, work))
        self.trained_tokens += trained_tokens

    # -- measurement -----------------------------------------------------------------

    def overlap(self, t0: float, t1: float, serial: list[tuple[float, float]],
                running_now: bool) -> CoRunOverlap:
        """Fractions of the decode time of [t0, t1) (``serial`` spans excluded) beside pieces."""
        serial_ms = sum(_intersect(s, e, t0, t1) for s, e in serial)
        decode = (t1 - t0) - serial_ms
        if decode <= 0:
            return CoRunOverlap(share=self.share)
        by_kind = [0.0, 0.0, 0.0]
        last: PieceSpan | None = None
        for p in self.pieces:
            if p.end <= t0 or p.start >= t1:
                if p.end <= t1:
                    last = p
                continue
            ov = _intersect(p.start, p.end, t0, t1)
            ov -= sum(_intersect(max(p.start, s), min(p.end, e), t0, t1) for s, e in serial
                      if e > p.start and s < p.end)
            total = p.work.units
            if total > 0 and ov > 0:
                for i, u in enumerate((p.work.units_fwd, p.work.units_bwd, p.work.units_head)):
                    by_kind[i] += ov * u / total
            last = p
        began_inside = self.started_at is not None and self.started_at > t0
        if running_now and self.active and last is not None and not began_inside:
            since = max(last.end, t0)
            if since < t1:
                total = last.work.units
                gap = (t1 - since) - sum(_intersect(s, e, since, t1) for s, e in serial)
                if total > 0 and gap > 0:
                    for i, u in enumerate((last.work.units_fwd, last.work.units_bwd,
                                           last.work.units_head)):
                        by_kind[i] += gap * u / total
        scale = 1.0 / decode
        fwd, bwd, head = (min(1.0, v * scale) for v in by_kind)
        excess = fwd + bwd + head - 1.0
        if excess > 0:  # spans that touch the boundary twice: clip to the whole iteration
            k = 1.0 / (fwd + bwd + head)
            fwd, bwd, head = fwd * k, bwd * k, head * k
        return CoRunOverlap(fwd, bwd, head, self.share)

    def account(self, arrangement: str, ms: float) -> None:
        self.time_ms[arrangement] += ms

    def reset(self) -> None:
        self.time_ms.clear()
        self.stop_latency_ms.clear()

    def status(self) -> dict:
        total = sum(self.time_ms.values())
        lat = list(self.stop_latency_ms)
        return {
            "active": self.active, "share": self.share if self.active else 0.0,
            "cpus": list(self.cpus) if self.active else [],
            "time_fraction": {k: round(v / total, 4) for k, v in sorted(self.time_ms.items())}
            if total else {},
            "stop_latency_ms": {"p50": float(np.quantile(lat, 0.5)) if lat else None,
                                "p99": float(np.quantile(lat, 0.99)) if lat else None,
                                "count": len(lat)},
        }
