"""Latency predictors by name."""

from __future__ import annotations

from harli_sgl.core.predictor.base import LatencyPredictor
from harli_sgl.core.predictor.two_stage import TwoStagePredictor

PREDICTORS: dict[str, type[LatencyPredictor]] = {TwoStagePredictor.name: TwoStagePredictor}


def make_predictor(name: str = TwoStagePredictor.name) -> LatencyPredictor:
    try:
        return PREDICTORS[name]()
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}; known: {sorted(PREDICTORS)}") from None
