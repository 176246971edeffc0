"""What the co-location logic knows about one scheduler iteration (engine-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IterationFeatures:
    """An iteration's batch as the latency predictor sees it."""

    batch_size: int          # requests in the batch (decode and extend)
    context_tokens: int      # total KV tokens the batch attends over
    extend_tokens: int = 0   # prefill/extend tokens computed in the same iteration


@dataclass(frozen=True, slots=True)
class SlotWork:
    """Finetune work run inside one iteration's cadence, split by piece kind.

    Forward-type pieces (layer and head forwards) and backward-type pieces cost
    differently per unit, so the co-run model keeps them apart.
    """

    units_fwd: int = 0
    units_bwd: int = 0
    pieces: int = 0

    @property
    def units(self) -> int:
        return self.units_fwd + self.units_bwd


NO_SLOT = SlotWork()
