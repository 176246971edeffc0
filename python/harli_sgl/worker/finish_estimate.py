"""A running job's ``estimated_finish``, from its own measured rate under the current load.

The worker marks the wall-clock time at which each of a job's steps is
reported (its metrics event, which comes after the step's validation, if any),
and the time its trainer started on this instance. The rate is the steps per
second over the last :data:`WINDOW_STEPS` of those marks, so it reflects what the
job gets *now*: slots shrink when decode traffic grows and the estimate moves
with them within a few steps, and the time spent in validation and checkpoints
is part of it. The estimate is ``last mark + remaining steps / rate``, in unix
seconds. Until there are two marks (a start and a step) there is no rate, and the
estimate is ``None`` (the job object shows null), never a guess. A resumed job
starts measuring afresh.
"""

from __future__ import annotations

from collections import deque

WINDOW_STEPS = 8


class FinishEstimate:
    """Step marks of one job and the finish time they imply."""

    def __init__(self, window_steps: int = WINDOW_STEPS) -> None:
        if window_steps < 1:
            raise ValueError(f"window_steps must be >= 1, got {window_steps}")
        self._marks: deque[tuple[int, float]] = deque(maxlen=window_steps + 1)

    def start(self, step: int, now: float) -> None:
        """Training (re)starts at ``step`` completed steps: earlier marks no longer apply."""
        self._marks.clear()
        self._marks.append((step, now))

    def step_done(self, step: int, now: float) -> None:
        self._marks.append((step, now))

    def finish_at(self, total_steps: int) -> int | None:
        """Unix seconds at which ``total_steps`` are done at the recent rate; None: no rate yet."""
        if len(self._marks) < 2:
            return None
        (s0, t0), (s1, t1) = self._marks[0], self._marks[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        seconds_per_step = (t1 - t0) / (s1 - s0)
        return round(t1 + max(total_steps - s1, 0) * seconds_per_step)
