"""What the co-location logic knows about one scheduler iteration (engine-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class IterationFeatures:
    """An iteration's batch as the latency predictor sees it."""

    batch_size: int          # requests in the batch (decode and extend)
    context_tokens: int      # total KV tokens the batch attends over
    extend_tokens: int = 0   # prefill/extend tokens computed in the same iteration
    # Attention work of those extend tokens: sum over requests of extend x sequence length.
    extend_attention: int = 0


class CostKind(IntEnum):
    """How a piece's units cost time: layer forwards, layer backwards, and the head.

    A frozen-base backward costs less per unit than a forward (no weight
    gradients), and the head (final norm, lm_head, loss) costs in proportion to
    the vocabulary, not the layer width, so the co-run model keeps them apart.
    """

    LAYER_FORWARD = 0
    LAYER_BACKWARD = 1
    HEAD = 2


@dataclass(frozen=True, slots=True)
class SlotWork:
    """Finetune work run inside one iteration's cadence, split by cost kind."""

    units_fwd: int = 0
    units_bwd: int = 0
    units_head: int = 0
    pieces: int = 0

    @property
    def units(self) -> int:
        return self.units_fwd + self.units_bwd + self.units_head

    def __add__(self, other: SlotWork) -> SlotWork:
        return SlotWork(self.units_fwd + other.units_fwd, self.units_bwd + other.units_bwd,
                        self.units_head + other.units_head, self.pieces + other.pieces)

    def plus(self, kind: int, units: int, pieces: int = 1) -> SlotWork:
        return SlotWork(self.units_fwd + (units if kind == CostKind.LAYER_FORWARD else 0),
                        self.units_bwd + (units if kind == CostKind.LAYER_BACKWARD else 0),
                        self.units_head + (units if kind == CostKind.HEAD else 0),
                        self.pieces + pieces)


NO_SLOT = SlotWork()


@dataclass(frozen=True, slots=True)
class CoRunOverlap:
    """Which share of an iteration's decode time ran beside worker pieces, by cost kind.

    Fractions of the decode time (the interval minus any serial top-up), so
    ``total`` is 0 for an iteration that ran alone and 1 for one that ran beside
    training from start to end. ``share`` is the worker's share of the device.
    """

    fwd: float = 0.0
    bwd: float = 0.0
    head: float = 0.0
    share: float = 0.0

    @property
    def total(self) -> float:
        return self.fwd + self.bwd + self.head


NO_OVERLAP = CoRunOverlap()
