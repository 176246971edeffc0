"""What a :class:`~.job_trainer.JobTrainer` hands its caller: progress, due checkpoints, errors.

Plain records, so the worker (and its tests) can name them without the trainer's
state machine: :class:`Progress` (read any time), :class:`DueCheckpoint` (a
snapshot to write, with the metrics OpenAI's checkpoint object carries), and
:class:`TrainingDiverged` (the job cannot go on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from harli_sgl.core.trainer.snapshot import Snapshot

# The metrics a checkpoint records (OpenAI's FineTuningJobCheckpoint.metrics, beside step).
CHECKPOINT_METRICS = ("train_loss", "train_mean_token_accuracy", "valid_loss",
                      "valid_mean_token_accuracy", "full_valid_loss",
                      "full_valid_mean_token_accuracy")

EventCallback = Callable[[str, str, dict], None]


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite; the job cannot go on."""


def check_finite(loss: float | None, what: str, step: int, total_steps: int, config) -> None:
    """Raise :class:`TrainingDiverged` naming the step when ``loss`` is NaN or infinite."""
    if loss is None or math.isfinite(loss):
        return
    raise TrainingDiverged(
        f"the {what} loss became {loss} at step {step}/{total_steps}: training diverged "
        f"(learning rate {config.learning_rate:g}, lora alpha {config.lora_alpha:g}, r "
        f"{config.lora_r}; try a lower learning rate multiplier or alpha)")


class DueCheckpoint(NamedTuple):
    step: int  # the completed steps it records
    path: str
    snapshot: Snapshot
    metrics: dict  # step and the CHECKPOINT_METRICS known when it was taken


class Progress(NamedTuple):
    step: int  # completed optimizer steps
    total_steps: int
    epoch: int  # 0-based epoch of the next step (n_epochs once done)
    trained_tokens: int
    loss: float | None  # loss of the last completed step
    tokens_per_s: float  # trained tokens per wall-clock second since this trainer's first run()
