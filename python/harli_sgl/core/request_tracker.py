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

A finished request also says how much of its TPOT finetune work cost: the
caller reports, per measured iteration that ran work, how much longer it took
than decode alone would have (:meth:`note_work`; stage 1's prediction for the
batch as placed), and a request's *work per token* is the sum of those between
its first token and its last over its tokens after the first. The policy backs
off only for near misses that work made materially slower; one that decode alone
produced (host drift, a prefill burst), or beside which work ran only a little,
says nothing about its slots. (Counting every request with any iteration of work
beside it did not do that: with co-running in 13-21% of decode time nearly every
request had some, and ``beta`` still fell to 0.77 past the knee; benchmarks §S1e.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

SWEEP_EVERY_S = 10.0
FORGET_AFTER_S = 120.0  # an entry not updated this long belongs to an aborted request


class RequestTracker:
    def __init__(self, on_finished: Callable[[float, float], None] | None = None):
        """``on_finished(tpot_ms, work_ms_per_token)`` for each request that finishes with
        at least two tokens."""
        # rid -> [t_first, n_first, n_last, t_last, work ms so far at its first token]
        self._reqs: dict[str, list[float]] = {}
        self._on_finished = on_finished
        self._last_sweep = time.monotonic()
        self._work_ms = 0.0  # time finetune work added to measured iterations, so far

    def note_work(self, added_ms: float) -> None:
        """A measured iteration ran finetune work (a slot, co-running, or both) and took
        ``added_ms`` longer than decode alone would have."""
        self._work_ms += max(0.0, added_ms)

    def update(self, rid: str, n_out: int, now: float, finished: bool) -> None:
        """A request has ``n_out`` output tokens at ``now`` (called after each iteration)."""
        entry = self._reqs.get(rid)
        if entry is None:
            if n_out <= 0:
                return
            entry = self._reqs[rid] = [now, float(n_out), float(n_out), now, self._work_ms]
        elif n_out > entry[2]:
            entry[2], entry[3] = float(n_out), now
        if finished:
            del self._reqs[rid]
            tokens_after_first = entry[2] - entry[1]
            if tokens_after_first >= 1 and self._on_finished is not None:
                self._on_finished(1000.0 * (entry[3] - entry[0]) / tokens_after_first,
                                  (self._work_ms - entry[4]) / tokens_after_first)
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
