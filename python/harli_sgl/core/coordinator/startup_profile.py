"""The start-up profile, and the latency profile file it leaves behind.

While the profile is on, busy iterations rotate between no slot (stage 1 rows),
a *synthetic* serial slot whose size sweeps ``PROFILE_UNITS`` (serial stage 2
rows), and, where the device has a share for the worker, synthetic co-running
(concurrent stage 2 rows), so every predictor stage sees the space before any
customer job runs. The first synthetic slot warms the worker's synthetic
workload up and is not learned. When it ends the predictor is persisted; the coordinator
then resets the metric windows, which synthetic traffic polluted. The profile
file (predictor weights plus the synthetic idle speed) is also re-saved every
``SAVE_EVERY_S`` while the predictor keeps learning, and loaded at start-up.
"""

from __future__ import annotations

import itertools
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING

from harli_sgl.core.policy.base import Grant
from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.predictor.profile_store import load_profile, save_profile

if TYPE_CHECKING:
    from harli_sgl.core.coordinator.corun_control import CoRunControl

logger = logging.getLogger(__name__)

PROFILE_UNITS = (256, 512, 1024, 2048, 4096, 8192)
SAVE_EVERY_S = 60.0


class ProfileTurn(Enum):
    ALONE = 0
    SERIAL = 1
    CONCURRENT = 2


class StartupProfile:
    def __init__(self, predictor: LatencyPredictor, path: str | None):
        self.predictor = predictor
        self.path = path
        self.on = False
        self._sizes = itertools.cycle(PROFILE_UNITS)
        self._turn = 0
        self._warm = False  # the first synthetic slot ran (and was not learned)
        self._saved_samples = 0
        self._last_save = time.monotonic()

    def run_turn(self, running: int, arrangements: CoRunControl) -> None:
        """One busy iteration's synthetic work: none, a serial slot, or co-running."""
        if not running:
            return
        share = arrangements.share
        self._turn = (self._turn + 1) % (3 if share > 0 else 2)
        turn = ProfileTurn(self._turn)
        if turn is ProfileTurn.CONCURRENT:
            arrangements.start(share, synthetic=True)
            return
        if arrangements.corun.active:
            arrangements.stop(wait=True)
        if turn is ProfileTurn.SERIAL:
            arrangements.run_serial(Grant(next(self._sizes), 1000.0), synthetic=True)
            if not self._warm:
                # The worker builds its synthetic workload inside the first synthetic slot
                # (measured: 100-180 ms for a 256-unit slot of the tiny model, 5-10 ms
                # after): a one-off, not what a slot costs, so stage 2 does not learn it.
                self._warm = True
                arrangements.meter.forget()

    def load(self) -> float | None:
        """Load the saved predictor; returns the synthetic idle speed saved with it."""
        saved = load_profile(self.path)
        if saved is None:
            return None
        try:
            self.predictor.load_state_dict(saved["predictor"])
        except (ValueError, KeyError) as e:
            logger.warning("harli: ignoring unreadable latency profile %s: %s", self.path, e)
            return None
        logger.info("harli: loaded the latency profile %s", self.path)
        return saved.get("idle_units_per_ms")

    def save(self, profile_units_per_ms: float | None) -> None:
        samples = self.predictor.samples
        if not self.path or samples == self._saved_samples:
            return
        save_profile(self.path, self.predictor.state_dict(), profile_units_per_ms)
        self._saved_samples = samples

    def save_due(self, now: float, profile_units_per_ms: float | None) -> None:
        if now - self._last_save > SAVE_EVERY_S:
            self._last_save = now
            self.save(profile_units_per_ms)

    def finish(self, profile_units_per_ms: float | None) -> None:
        """The profile is over: the predictor counts as profiled, is persisted and logged."""
        self.on = False
        p = self.predictor
        p.profiled = True
        p.reset_errors()
        self.save(profile_units_per_ms)
        st = p.status()
        # One readable line; the weights are in /harli/status?debug=1 and the saved profile.
        logger.info("harli: start-up latency profile done: %s", ", ".join(
            f"{stage} {st[stage]['samples']} samples, MAPE "
            + (f"{100 * st[stage]['mape']:.0f}%" if st[stage].get("mape") is not None else "n/a")
            for stage in ("stage1", "stage2") if stage in st))
