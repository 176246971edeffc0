"""When a job evaluates its validation file, and on which of its examples.

OpenAI reports two validation numbers, and so does a job here:

* ``valid_loss`` / ``valid_mean_token_accuracy`` on a *sample* of the validation
  file (at most :data:`SAMPLE_EXAMPLES` examples, the same ones every time, picked
  by the job's seed), every :attr:`ValidationPlan.interval` steps, so the curve is
  cheap and comparable from point to point;
* ``full_valid_loss`` / ``full_valid_mean_token_accuracy`` on *all* of it, at each
  checkpoint (the checkpoint carries them) and after the last step.

The interval is ``ceil(total_steps / SAMPLE_POINTS)``: about :data:`SAMPLE_POINTS`
sample evaluations per job, whatever its length. A full evaluation replaces the
sample one due at the same step (its numbers are reported as both).

Evaluations are forward-only steps of the layer-chunked trainer
(:meth:`ChunkedTrainer.start_eval`), so they run in pieces inside slots like the
rest of training; this module only decides what is due and holds the collated
micro-batches, which never change during a job.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from harli_sgl.core.trainer.data import Example, MicroBatch, collate, epoch_order

SAMPLE_EXAMPLES = 32  # the sample's size: OpenAI evaluates a batch-sized sample per point
SAMPLE_POINTS = 20  # sample evaluations per job, about
_SAMPLE_EPOCH = -1  # epoch_order's seed slot for the sample: no training epoch uses it


class Evaluation(enum.Enum):
    SAMPLE = "sample"
    FULL = "full"


class ValidationPlan:
    """The validation batches of one job and which evaluation a finished step asks for.

    Args:
        examples: the encoded validation examples (may be empty: no validation).
        micro_batch_size: examples per evaluated micro-batch.
        pad_id: the tokenizer's pad id.
        seed: the job's seed (picks the sample).
        total_steps: the job's optimizer steps.
    """

    def __init__(self, examples: Sequence[Example], micro_batch_size: int, pad_id: int,
                 seed: int, total_steps: int) -> None:
        self.examples = list(examples)
        order = epoch_order(len(self.examples), seed, _SAMPLE_EPOCH)[:SAMPLE_EXAMPLES]
        self.sample_examples = [self.examples[i] for i in sorted(order)]
        self.full_batches = _batches(self.examples, micro_batch_size, pad_id)
        self.sample_batches = _batches(self.sample_examples, micro_batch_size, pad_id)
        self.interval = max(1, math.ceil(total_steps / SAMPLE_POINTS))
        self.total_steps = total_steps

    def __bool__(self) -> bool:
        return bool(self.examples)

    def due(self, completed_steps: int, checkpoint: bool) -> Evaluation | None:
        """The evaluation step ``completed_steps`` asks for (``checkpoint``: one is due there)."""
        if not self.examples:
            return None
        if checkpoint or completed_steps >= self.total_steps:
            return Evaluation.FULL
        return Evaluation.SAMPLE if completed_steps % self.interval == 0 else None

    def batches(self, evaluation: Evaluation) -> list[MicroBatch]:
        return self.full_batches if evaluation is Evaluation.FULL else self.sample_batches

    def size(self, evaluation: Evaluation) -> int:
        return len(self.examples if evaluation is Evaluation.FULL else self.sample_examples)


def _batches(examples: list[Example], size: int, pad_id: int) -> list[MicroBatch]:
    # Collated once: the same micro-batches are evaluated every time.
    return [collate(examples[k:k + size], pad_id) for k in range(0, len(examples), size)]


def metrics(evaluation: Evaluation, loss: float, accuracy: float) -> dict[str, float]:
    """The metrics-event (and checkpoint) fields one evaluation fills."""
    out = {"valid_loss": loss, "valid_mean_token_accuracy": accuracy}
    if evaluation is Evaluation.FULL:
        out.update(full_valid_loss=loss, full_valid_mean_token_accuracy=accuracy)
    return out
