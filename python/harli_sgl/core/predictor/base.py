"""The decode-latency predictor interface.

Contract: ``predict_decode(f)`` is the time (ms) of a scheduler iteration whose
batch is ``f`` when no finetune slot runs (stage 1); ``predict_corun(f, w)`` is
that iteration's time when serial slot work ``w`` runs inside its cadence
(``slot_cost(w)`` is the slot's own part); ``predict_concurrent(f, share)`` is
its time when the worker trains beside it on ``share`` of the device for the
whole iteration (``interference`` is the added part). All are called on the
decode hot path and must be O(1). ``observe`` and ``observe_concurrent`` feed
one measured iteration of each kind; implementations learn online. ``ready``
and the ``confident`` pair say whether a prediction rests on data. These are
exactly the calls the coordinator and the policies make.
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
    def predict_decode(self, f: IterationFeatures, wide: bool = False) -> float:
        """Decode alone on decode's own cores; ``wide``: on every core (a CPU host's
        widened iteration, which the predictor also learns from)."""

    @abstractmethod
    def predict_corun(self, f: IterationFeatures, work: SlotWork, wide: bool = False) -> float: ...

    @abstractmethod
    def observe(self, f: IterationFeatures, interval_ms: float, work: SlotWork,
                wide: bool = False) -> None: ...

    @abstractmethod
    def slot_cost(self, work: SlotWork) -> float: ...

    @abstractmethod
    def predict_concurrent(self, f: IterationFeatures, share: float) -> float: ...

    @abstractmethod
    def interference(self, f: IterationFeatures, share: float, overlap=None) -> float: ...

    @abstractmethod
    def concurrent_bias(self, share: float, now: float | None = None) -> float:
        """Recent error of the concurrent model at ``share`` (observed - predicted, ms)."""

    @abstractmethod
    def concurrent_confident(self, f: IterationFeatures, share: float) -> bool: ...

    @abstractmethod
    def observe_concurrent(self, f: IterationFeatures, decode_ms: float, overlap,
                           serial: SlotWork | None = None, interval_ms: float | None = None) -> None: ...

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
