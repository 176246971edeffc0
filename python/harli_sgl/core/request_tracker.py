"""Per-request token timing, measured where tokens are emitted (the scheduler).

A request's TPOT is computed the way bench_serving computes it: the time from
its first token to its last, over the number of tokens after the first. The
tracker keeps, per running request, when its first token came and how many
followed, which gives two things:

* finished requests' TPOTs, for SLO attainment and the scheduler's feedback;
* each running request's *deadline* for its next token if its TPOT so far is
  to stay within a target: ``t_first + target * (k + 1)``. The tightest
  deadline is how much time the next iteration (and its slot) may take. A
  request that absorbed a long prefill iteration of a newcomer gets a tighter
  deadline until it has caught up, so spikes are repaid rather than ignored.

A finished request also says whether finetune work ran beside it: the caller
counts the measured iterations that ran work (:meth:`note_work`), and a request
*worked* if that count moved between its first token and its last. The policy
backs off only for near misses that work could have caused; one that decode
alone produced (host drift, a prefill burst) says nothing about its slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SWEEP_EVERY_S = 10.0
FORGET_AFTER_S = 120.0  # an entry not updated this long belongs to an aborted request


class RequestTracker:
    def __init__(self, on_finished: Callable[[float, bool], None] | None = None):
        # rid -> [t_first, n_first, n_last, t_last, worked iterations at its first token]
        self._reqs: dict[str, list[float]] = {}
        self._on_finished = on_finished
        self._last_sweep = time.monotonic()
        self._worked = 0  # measured iterations that ran finetune work, so far

    def note_work(self) -> None:
        """A measured iteration ran finetune work (a slot, co-running, or both)."""
        self._worked += 1

    def update(self, rid: str, n_out: int, now: float, finished: bool) -> None:
        """A request has ``n_out`` output tokens at ``now`` (called after each iteration)."""
        entry = self._reqs.get(rid)
        if entry is None:
            if n_out <= 0:
                return
            entry = self._reqs[rid] = [now, float(n_out), float(n_out), now, float(self._worked)]
        elif n_out > entry[2]:
            entry[2], entry[3] = float(n_out), now
        if finished:
            del self._reqs[rid]
            tokens_after_first = entry[2] - entry[1]
            if tokens_after_first >= 1 and self._on_finished is not None:
                self._on_finished(1000.0 * (entry[3] - entry[0]) / tokens_after_first,
                                  self._worked > entry[4])
        if now - self._last_sweep > SWEEP_EVERY_S:
            self._sweep(now)

    def slack_ms(self, now: float, target_tpot_ms: float) -> float | None:
        """Time (ms) until the earliest running request's next token is due, or None."""
        best = None
        per_token = target_tpot_ms / 1000.0
        for t_first, n_first, n_last, _, _ in self._reqs.values():
            due = t_first + per_token * (n_last - n_first + 1)
            if best is None or due < best:
                best = due
        return None if best is None else 1000.0 * (best - now)

    def running_tpots_ms(self) -> list[float]:
        return [1000.0 * (t_last - t_first) / (n_last - n_first)
                for t_first, n_first, n_last, t_last, _ in self._reqs.values() if n_last > n_first]

    def __len__(self) -> int:
        return len(self._reqs)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for rid in [r for r, e in self._reqs.items() if now - e[3] > FORGET_AFTER_S]:
            del self._reqs[rid]
