"""The decode-latency predictor interface.

Contract: ``predict_decode(f)`` is the time (ms) of a scheduler iteration whose
batch is ``f`` when no finetune slot runs (stage 1); ``predict_corun(f, w)``
is that iteration's time when slot work ``w`` runs inside its cadence, in the
execution mode in use (stage 2; serial here: the slot runs between iterations
and the cadence includes it). Both are called on the decode hot path and must
be O(1). ``observe`` feeds one measured iteration; implementations learn
online. ``ready`` says whether a stage has seen enough data to be trusted.
Predictors are picked by name from :mod:`harli_sgl.core.predictor.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from harli_sgl.core.iteration import IterationFeatures, SlotWork


class LatencyPredictor(ABC):
    name: ClassVar[str]
    profiled: bool = False  # set once a start-up profile has been run (or loaded)

    @property
    @abstractmethod
    def samples(self) -> int:
        """Observations learned from, all stages together."""

    @abstractmethod
    def predict_decode(self, f: IterationFeatures) -> float: ...

    @abstractmethod
    def predict_corun(self, f: IterationFeatures, work: SlotWork) -> float: ...

    @abstractmethod
    def observe(self, f: IterationFeatures, interval_ms: float, work: SlotWork) -> None: ...

    @abstractmethod
    def ready(self, stage: int) -> bool: ...

    def reset_errors(self) -> None:
        """Start a fresh held-out error window (e.g. once a profile has fitted the model)."""

    def confident(self, f: IterationFeatures) -> bool:
        """Whether stage 1's prediction for this batch rests on data (default: yes)."""
        return True

    @abstractmethod
    def status(self) -> dict: ...

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...
