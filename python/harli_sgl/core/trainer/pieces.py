"""A training or evaluation step as a schedule of pieces: what runs next and what it costs.

:class:`ChunkedStep` is the plan and cursor of one step of
:mod:`harli_sgl.core.trainer.chunked`: per micro-batch ``forward layer 0 .. L-1,
head forward, head backward, backward layer L-1 .. 0`` (an evaluation step: the
forward half), each piece priced in units (token-layers) for the slot policy.
It holds the step's bookkeeping (supervised tokens, loss and hits so far, the
current micro-batch's tensors in :class:`MicroState`) but runs nothing: the
trainer executes the pieces this schedule hands out. Kept apart from the
trainer so that what a slot is granted (pieces and units) reads on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from harli_sgl.core.iteration import CostKind, SlotWork
from harli_sgl.core.trainer.data import IGNORE_INDEX, MicroBatch
from harli_sgl.core.trainer.stack import LayerContext


class PieceKind(enum.Enum):
    FORWARD = "forward"
    HEAD_FORWARD = "head_forward"
    HEAD_BACKWARD = "head_backward"
    BACKWARD = "backward"

    @property
    def cost_kind(self) -> CostKind:
        """How the latency predictor prices this piece's units."""
        if self in (PieceKind.HEAD_FORWARD, PieceKind.HEAD_BACKWARD):
            return CostKind.HEAD
        return CostKind.LAYER_BACKWARD if self is PieceKind.BACKWARD else CostKind.LAYER_FORWARD


class Piece(NamedTuple):
    kind: PieceKind
    layer: int  # decoder layer index; -1 for the head
    units: int


class RunResult(NamedTuple):
    work: SlotWork  # the pieces this call ran, units by cost kind
    tokens: int  # real tokens of the micro-batches any piece of this call worked on
    trained_tokens: int  # real tokens of micro-batches whose backward finished in this call
    step_done: bool
    loss: float | None  # mean token loss of the step this call finished, else None
    accuracy: float | None = None  # its mean token accuracy (argmax hits / supervised tokens)

    @property
    def units(self) -> int:
        return self.work.units

    @property
    def pieces(self) -> int:
        return self.work.pieces


@dataclass
class MicroState:
    """Tensors one micro-batch keeps between its pieces."""

    batch: MicroBatch
    ctx: LayerContext | None = None
    embeds: torch.Tensor | None = None  # with its graph, only if the embedding trains
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # leaf input per layer/head
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)  # output + graph per layer
    loss: torch.Tensor | None = None
    grad: torch.Tensor | None = None  # upstream gradient for the next backward piece


class ChunkedStep:
    """Plan and cursor of one optimizer step: which piece is next and what it costs."""

    def __init__(self, micro_batches: Sequence[MicroBatch], num_layers: int,
                 evaluate: bool = False) -> None:
        if not micro_batches:
            raise ValueError("a step needs at least one micro-batch")
        self.micro_batches = list(micro_batches)
        self.num_layers = num_layers
        self.evaluate = evaluate  # forward pieces only, no gradients, no update
        self.padded_tokens = [mb.input_ids.numel() for mb in self.micro_batches]
        self.real_tokens = [int(mb.attention_mask.sum()) for mb in self.micro_batches]
        # Same count HF's shift produces: token t is predicted from positions < t.
        self.supervised_tokens = sum(int((mb.labels[:, 1:] != IGNORE_INDEX).sum())
                                     for mb in self.micro_batches)
        if self.supervised_tokens == 0:
            raise ValueError("a step needs at least one supervised token")
        self.micro_index = 0
        self.position = 0  # index into the 2L+2 pieces of the current micro-batch
        self.state: MicroState | None = None
        self.loss_sum: torch.Tensor | None = None
        self.hits = 0  # supervised tokens predicted exactly, over the micro-batches so far

    @property
    def pieces_per_micro_batch(self) -> int:
        return self.num_layers + 1 if self.evaluate else 2 * self.num_layers + 2

    @property
    def finished(self) -> bool:
        return self.micro_index == len(self.micro_batches)

    def piece_at(self, micro_index: int, position: int) -> Piece:
        t, n = self.padded_tokens[micro_index], self.num_layers
        if position < n:
            return Piece(PieceKind.FORWARD, position, t)
        if position == n:
            return Piece(PieceKind.HEAD_FORWARD, -1, t)
        if position == n + 1:
            return Piece(PieceKind.HEAD_BACKWARD, -1, 2 * t)
        return Piece(PieceKind.BACKWARD, 2 * n + 1 - position, 2 * t)

    def next_piece(self) -> Piece:
        return self.piece_at(self.micro_index, self.position)

    def upcoming(self, limit: int) -> list[Piece]:
        """The next ``limit`` pieces of this step, in execution order."""
        out: list[Piece] = []
        micro, pos = self.micro_index, self.position
        while len(out) < limit and micro < len(self.micro_batches):
            out.append(self.piece_at(micro, pos))
            pos += 1
            if pos == self.pieces_per_micro_batch:
                micro, pos = micro + 1, 0
        return out

    def advance(self) -> bool:
        """Move past the current piece; True if that finished its micro-batch."""
        self.position += 1
        if self.position < self.pieces_per_micro_batch:
            return False
        self.micro_index, self.position, self.state = self.micro_index + 1, 0, None
        return True

    @property
    def micro_batch_units(self) -> int:
        """Units left in the current micro-batch (0 once the step is finished)."""
        if self.finished:
            return 0
        return sum(self.piece_at(self.micro_index, p).units
                   for p in range(self.position, self.pieces_per_micro_batch))

    @property
    def remaining_units(self) -> int:
        per_mb = (1 if self.evaluate else 3) * (self.num_layers + 1)
        return self.micro_batch_units + sum(per_mb * t
                                            for t in self.padded_tokens[self.micro_index + 1:])
