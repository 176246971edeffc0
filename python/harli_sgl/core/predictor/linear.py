"""Online ridge regression with exponential forgetting and honest held-out error.

The decode-latency models are linear in a handful of batch features, so the
whole state is the sufficient statistics ``A = sum w x x^T`` and ``b = sum w x y``
(``d <= 8``). Each observation decays the old statistics by ``forget`` so the
model follows drift (thermal throttling, a neighbour process), and a ridge
prior pulls the weights toward ``prior`` (e.g. a start-up profile) while data
is scarce. Weights are re-solved lazily, at most every ``refit_every``
observations, so ``predict`` on the decode hot path is one dot product.

Rare stalls (a GC pause, a page fault storm) would drag a least-squares fit
away from the typical iteration, so rows are Huber-weighted: a row whose
residual exceeds ``huber_k`` robust standard deviations (from the median
absolute residual of recent rows) counts proportionally less. The guard margin,
not the fit, is what covers tails.

Some weights have a known sign: a slot with more layer units never costs less
time. When the features that carry them are correlated (a slot's forward,
backward and head units grow together), the unconstrained fit splits the cost
between them arbitrarily, and a negative weight makes a slot of another mix
predict a negative cost, which a budget check reads as free (measured: 1 in 3
start-up profiles of the worker test). ``nonneg`` names those weights; the fit
is then the exact least-squares solution under ``w[i] >= 0``, found by solving
the ridge normal equations on every subset of those weights held at zero and
keeping the best feasible one (``2**len(nonneg)`` solves of a ``d <= 8`` system).

Error is measured *prospectively* on held-out rows: every ``holdout_every``-th
observation is predicted with the current model before it is seen, scored into
the MAPE, and never used for fitting. That is the error the scheduler actually
suffers, not an in-sample fit.
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np

MAX_NONNEG = 8


class OnlineLinearModel:
    def __init__(self, dim: int, *, prior: np.ndarray | None = None, ridge: float = 1e-3,
                 forget: float = 0.999, refit_every: int = 8, holdout_every: int = 5,
                 error_window: int = 500, huber_k: float = 3.0, nonneg: tuple[int, ...] = ()):
        assert len(nonneg) <= MAX_NONNEG, "the constrained fit enumerates subsets"
        self.dim = dim
        self.nonneg = tuple(nonneg)
        self.prior = np.zeros(dim) if prior is None else np.asarray(prior, dtype=float)
        self.ridge = ridge
        self.forget = forget
        self.refit_every = refit_every
        self.holdout_every = holdout_every
        self.huber_k = huber_k
        self.A = np.zeros((dim, dim))
        self.b = np.zeros(dim)
        self.w = self.prior.copy()
        self.samples = 0
        self._seen = 0
        self._stale = 0
        self._errors: deque[float] = deque(maxlen=error_window)
        self._residuals: deque[float] = deque(maxlen=error_window)

    def predict(self, x: np.ndarray | list[float]) -> float:
        return float(np.dot(self.w, x))

    def observe(self, x: np.ndarray | list[float], y: float, scored: float | None = None) -> bool:
        """Learn from one row, or score it if it is held out; returns True if held out.

        ``scored``: the prediction to score instead of the linear one, where the caller
        predicts otherwise (stage 1 interpolates thin buckets)."""
        x = np.asarray(x, dtype=float)
        self._seen += 1
        pred = self.predict(x)
        self._residuals.append(y - pred)
        if self.holdout_every and self._seen % self.holdout_every == 0 and self.samples > 2 * self.dim:
            if y > 0:
                self._errors.append(abs((pred if scored is None else scored) - y) / y)
            return True
        weight = self._huber_weight(y - pred)
        self.A *= self.forget
        self.b *= self.forget
        self.A += weight * np.outer(x, x)
        self.b += weight * x * y
        self.samples += 1
        self._stale += 1
        if self._stale >= self.refit_every or self.samples <= 2 * self.dim:
            self.refit()
        return False

    def _huber_weight(self, residual: float) -> float:
        if len(self._residuals) < 50 or self.samples < 4 * self.dim:
            return 1.0
        scale = 1.4826 * float(np.median(np.abs(self._residuals))) + 1e-9
        limit = self.huber_k * scale
        return 1.0 if abs(residual) <= limit else limit / abs(residual)

    def refit(self) -> None:
        # Ridge toward the prior, scaled per feature by that feature's own energy so
        # the pull is the same relative strength for a constant and for token counts.
        lam = self.ridge * np.maximum(np.diag(self.A), 1e-9)
        m = self.A + np.diag(lam)
        v = self.b + lam * self.prior
        try:
            self.w = _solve_nonneg(m, v, self.nonneg)
        except np.linalg.LinAlgError:
            pass
        self._stale = 0

    def reset_errors(self) -> None:
        self._errors.clear()

    @property
    def mape(self) -> float | None:
        return float(np.mean(self._errors)) if self._errors else None

    @property
    def heldout(self) -> int:
        return len(self._errors)

    def state_dict(self) -> dict:
        return {"A": self.A.tolist(), "b": self.b.tolist(), "w": self.w.tolist(),
                "samples": self.samples, "prior": self.prior.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.A = np.asarray(state["A"], dtype=float)
        self.b = np.asarray(state["b"], dtype=float)
        self.w = np.asarray(state["w"], dtype=float)
        self.samples = int(state["samples"])
        self.prior = np.asarray(state.get("prior", self.prior), dtype=float)
        if any(self.w[i] < 0 for i in self.nonneg):
            self.refit()  # saved before the weights were constrained


def _solve_nonneg(m: np.ndarray, v: np.ndarray, nonneg: tuple[int, ...]) -> np.ndarray:
    """argmin ``w m w - 2 v w`` subject to ``w[i] >= 0`` for ``i`` in ``nonneg``.

    ``m`` is positive definite (the ridge makes it so), so the problem is convex and
    its optimum has some set of constrained weights at exactly zero with the rest
    solving the normal equations restricted to the others. Trying every such set and
    keeping the feasible solution of least objective is exact.
    """
    w = np.linalg.solve(m, v)
    if all(w[i] >= 0 for i in nonneg):
        return w
    best, best_obj = None, np.inf
    for k in range(1, len(nonneg) + 1):
        for zero in itertools.combinations(nonneg, k):
            free = [i for i in range(len(v)) if i not in zero]
            cand = np.zeros_like(v)
            cand[free] = np.linalg.solve(m[np.ix_(free, free)], v[free])
            if any(cand[i] < 0 for i in nonneg):
                continue
            obj = float(cand @ m @ cand - 2.0 * v @ cand)
            if obj < best_obj:
                best, best_obj = cand, obj
    return best  # all of ``nonneg`` at zero is always feasible
