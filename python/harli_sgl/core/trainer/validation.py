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
sample one due at the same step (its numbers are reported as both). A DPO job
reports its own fields on the same plan (DPO's loss and rewards, :mod:`.dpo_job`).

Evaluations are forward-only steps of the layer-chunked trainer
(:meth:`ChunkedTrainer.start_eval`), so they run in pieces inside slots like the
rest of training; this module only decides what is due and holds the collated
micro-batches, which never change during a job, with the example indices each
holds (a DPO job keys its validation pairs' reference log-probs by them). The
plan is the same for supervised examples and DPO pairs: only ``collate_fn``
differs (:func:`.preference.collate_pairs` for pairs).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

from harli_sgl.core.trainer.data import MicroBatch, collate, epoch_order

SAMPLE_EXAMPLES = 32  # the sample's size: OpenAI evaluates a batch-sized sample per point
SAMPLE_POINTS = 20  # sample evaluations per job, about
_SAMPLE_EPOCH = -1  # epoch_order's seed slot for the sample: no training epoch uses it


class Evaluation(enum.Enum):
    SAMPLE = "sample"
    FULL = "full"


class ValidationPlan:
    """The validation batches of one job and which evaluation a finished step asks for.

    Args:
        examples: the encoded validation examples, or DPO pairs (may be empty: no validation).
        micro_batch_size: examples (pairs) per evaluated micro-batch.
        pad_id: the tokenizer's pad id.
        seed: the job's seed (picks the sample).
        total_steps: the job's optimizer steps.
        collate_fn: ``collate_fn(examples, pad_id) -> MicroBatch``.
    """

    def __init__(self, examples: Sequence[Any], micro_batch_size: int, pad_id: int,
                 seed: int, total_steps: int,
                 collate_fn: Callable[[list, int], MicroBatch] = collate) -> None:
        self.examples = list(examples)
        sample = sorted(epoch_order(len(self.examples), seed, _SAMPLE_EPOCH)[:SAMPLE_EXAMPLES])
        self._groups = {Evaluation.FULL: _groups(list(range(len(self.examples))),
                                                 micro_batch_size),
                        Evaluation.SAMPLE: _groups(sample, micro_batch_size)}
        # Collated once: the same micro-batches are evaluated every time.
        self._batches = {evaluation: [collate_fn([self.examples[i] for i in group], pad_id)
                                      for group in groups]
                         for evaluation, groups in self._groups.items()}
        self._sizes = {Evaluation.FULL: len(self.examples), Evaluation.SAMPLE: len(sample)}
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
        return self._batches[evaluation]

    def groups(self, evaluation: Evaluation) -> list[list[int]]:
        """The indices into ``examples`` of each of :meth:`batches`' micro-batches."""
        return self._groups[evaluation]

    def size(self, evaluation: Evaluation) -> int:
        return self._sizes[evaluation]


def _groups(indices: list[int], size: int) -> list[list[int]]:
    return [indices[k:k + size] for k in range(0, len(indices), size)]


def metrics(evaluation: Evaluation, loss: float, accuracy: float) -> dict[str, float]:
    """The metrics-event (and checkpoint) fields one evaluation fills."""
    out = {"valid_loss": loss, "valid_mean_token_accuracy": accuracy}
    if evaluation is Evaluation.FULL:
        out.update(full_valid_loss=loss, full_valid_mean_token_accuracy=accuracy)
    return out
