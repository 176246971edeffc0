"""One DPO job: a :class:`JobTrainer` whose examples are preference pairs.

Everything a supervised job has (the deterministic schedule, budgets, slots,
checkpoints, resume, events) is inherited; what differs is in three places:

* the chunked trainer is a :class:`~.dpo.DpoChunkedTrainer` with the job's beta;
* before a step whose pairs have no reference log-probs yet, a *reference
  step* runs first (forward pieces with the adapter off, inside slots like any
  piece). Its log-probs are kept per pair, so every pair's reference is computed
  once per trainer: in the first epoch, or again after a resume (the base model
  never changes, so a recomputed reference is the same; it is not checkpointed);
* ``step`` events carry DPO's metrics (:class:`~.dpo.PreferenceMetrics`) beside
  ``train_loss``.

Validation files are not supported for DPO jobs yet (the job API refuses one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataPosition, MicroBatch, epoch_order
from harli_sgl.core.trainer.dpo import DpoChunkedTrainer
from harli_sgl.core.trainer.job_trainer import JobTrainer
from harli_sgl.core.trainer.preference import PreferenceExample, collate_pairs


class DpoJobTrainer(JobTrainer):
    """Trains one LoRA adapter with DPO on preference ``examples`` in budgeted pieces.

    Args: as :class:`JobTrainer`, with ``examples`` encoded preference pairs
    (:func:`.preference.encode_preference_record`) and ``config.dpo_beta`` set.
    """

    def __init__(self, base_model: nn.Module, tokenizer: Any,
                 examples: Sequence[PreferenceExample], config: TrainConfig, **kwargs: Any) -> None:
        if config.dpo_beta is None:
            raise ValueError("a DPO job needs config.dpo_beta")
        if kwargs.get("validation_examples"):
            raise ValueError("validation examples are not supported for DPO jobs")
        self._references: dict[int, torch.Tensor] = {}  # pair index -> [preferred, non-preferred]
        self._reference_pairs: list[list[int]] | None = None  # micro-batches of the ref step
        super().__init__(base_model, tokenizer, examples, config, **kwargs)

    def _init_data(self, tokenizer: Any, examples: Sequence[PreferenceExample]) -> None:
        super()._init_data(tokenizer, [e for pair in examples for e in pair])
        self.examples = list(examples)

    def _init_optimizer(self, saved_tensors_hooks: Any) -> None:
        super()._init_optimizer(saved_tensors_hooks)
        self._chunked = DpoChunkedTrainer(self.peft_model, self.optimizer,
                                          beta=self.config.dpo_beta,
                                          max_grad_norm=self.config.max_grad_norm,
                                          saved_tensors_hooks=saved_tensors_hooks)

    def _ensure_step(self) -> None:
        if not self._chunked.idle:
            return
        groups = self._step_pairs(self.position)
        missing = [[i for i in group if i not in self._references] for group in groups]
        missing = [group for group in missing if group]
        if missing:
            self._reference_pairs = missing
            self._chunked.start_reference([self._collate(group) for group in missing])
            return
        refs = [torch.cat([self._references[i][0:1] for i in group] +
                          [self._references[i][1:2] for i in group]) for group in groups]
        self._chunked.start_step([self._collate(group) for group in groups], references=refs)

    def _after_eval(self, loss: float, accuracy: float | None) -> None:
        if self._reference_pairs is None:
            super()._after_eval(loss, accuracy)
            return
        for group, logps in zip(self._reference_pairs, self._chunked.take_reference()):
            k = len(group)
            for j, i in enumerate(group):
                self._references[i] = torch.stack([logps[j], logps[k + j]])
        self._reference_pairs = None

    def _step_pairs(self, position: DataPosition) -> list[list[int]]:
        """The pair indices of the step at ``position``, one list per micro-batch."""
        if self._order is None or self._order[0] != position.epoch:
            self._order = (position.epoch,
                           epoch_order(len(self.examples), self.config.seed, position.epoch))
        bs, mbs = self.config.batch_size, self.config.micro_batch_size
        chosen = self._order[1][position.step * bs:(position.step + 1) * bs]
        return [chosen[k:k + mbs] for k in range(0, len(chosen), mbs)]

    def _collate(self, pairs: list[int]) -> MicroBatch:
        return collate_pairs([self.examples[i] for i in pairs], self.pad_id)

    def _emit(self, kind: str, message: str, data: dict) -> None:
        metrics = self._chunked.last_metrics
        if kind == "step":
            # A DPO step has no token accuracy (its head counts no hits): its accuracy is
            # the reward accuracy below, so the supervised field is left out, not sent as 0.
            data = {k: v for k, v in data.items() if k != "train_mean_token_accuracy"}
        if kind == "step" and metrics is not None:
            data = {**data, "train_chosen_reward": metrics.chosen_reward,
                    "train_rejected_reward": metrics.rejected_reward,
                    "train_reward_margin": metrics.reward_margin,
                    "train_reward_accuracy": metrics.reward_accuracy}
            message = f"{message}, reward margin {metrics.reward_margin:.4f}"
        super()._emit(kind, message, data)

    def close(self) -> nn.Module:
        self._reference_pairs = None
        return super().close()
