"""One DPO job: a :class:`JobTrainer` whose examples are preference pairs.

Everything a supervised job has (the deterministic schedule, budgets, slots,
checkpoints, resume, events, the validation plan) is inherited; what differs is
in four places:

* the chunked trainer is a :class:`~.dpo.DpoChunkedTrainer` with the job's beta;
* before a step whose pairs have no reference log-probs yet, a *reference
  step* runs first (forward pieces with the adapter off, inside slots like any
  piece). Its log-probs are kept per pair, so every pair's reference is computed
  once per trainer: in the first epoch, or again after a resume (the base model
  never changes, so a recomputed reference is the same; it is not checkpointed);
* validation pairs (a preference file, like the training file) are evaluated
  by :mod:`.validation`'s plan as DPO: an evaluation step with the adapter on
  scores the policy against the pairs' references, which the job's first
  evaluation computes for *every* validation pair in one reference step over the
  full evaluation's micro-batches (so a pair's reference never depends on which
  evaluation came first, or on a resume) and keeps;
* ``step`` events carry DPO's metrics (:class:`~.dpo.PreferenceMetrics`):
  ``train_loss`` and ``train_*_reward*`` of the step and, on evaluated steps,
  ``valid_loss`` with ``valid_chosen_reward``, ``valid_rejected_reward``,
  ``valid_reward_margin``, ``valid_reward_accuracy`` (and ``full_valid_loss``,
  ``full_valid_reward_margin``, ``full_valid_reward_accuracy`` for all of the
  file). A DPO step has no mean token accuracy, so no ``*_mean_token_accuracy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataPosition, MicroBatch, checked_examples
from harli_sgl.core.trainer.dpo import DpoChunkedTrainer, PreferenceMetrics
from harli_sgl.core.trainer.job_trainer import JobTrainer
from harli_sgl.core.trainer.preference import PreferenceExample, collate_pairs
from harli_sgl.core.trainer.validation import Evaluation

References = dict[int, torch.Tensor]  # pair index -> [preferred, non-preferred] log-probs


def valid_metrics(evaluation: Evaluation, m: PreferenceMetrics) -> dict[str, float]:
    """The metrics-event (and checkpoint) fields one DPO evaluation fills."""
    out = {"valid_loss": m.loss, "valid_chosen_reward": m.chosen_reward,
           "valid_rejected_reward": m.rejected_reward, "valid_reward_margin": m.reward_margin,
           "valid_reward_accuracy": m.reward_accuracy}
    if evaluation is Evaluation.FULL:
        out.update(full_valid_loss=m.loss, full_valid_reward_margin=m.reward_margin,
                   full_valid_reward_accuracy=m.reward_accuracy)
    return out


class DpoJobTrainer(JobTrainer):
    """Trains one LoRA adapter with DPO on preference ``examples`` in budgeted pieces.

    Args: as :class:`JobTrainer`, with ``examples`` (and ``validation_examples``)
    encoded preference pairs (:func:`.preference.encode_preference_record`) and
    ``config.dpo_beta`` set.
    """

    # OpenAI's checkpoint metrics, with the reward ones where a DPO step has no token accuracy.
    checkpoint_metrics = ("train_loss", "train_reward_margin", "train_reward_accuracy",
                          "valid_loss", "valid_reward_margin", "valid_reward_accuracy",
                          "full_valid_loss", "full_valid_reward_margin",
                          "full_valid_reward_accuracy")
    _collate_validation = staticmethod(collate_pairs)

    def __init__(self, base_model: nn.Module, tokenizer: Any,
                 examples: Sequence[PreferenceExample], config: TrainConfig, **kwargs: Any) -> None:
        if config.dpo_beta is None:
            raise ValueError("a DPO job needs config.dpo_beta")
        self._references: References = {}  # of the training pairs
        self._valid_references: References = {}  # of the validation pairs
        # The reference step in flight: where its log-probs go, and its micro-batches' pairs.
        self._reference_for: tuple[References, list[list[int]]] | None = None
        super().__init__(base_model, tokenizer, examples, config, **kwargs)

    def _init_data(self, tokenizer: Any, examples: Sequence[PreferenceExample]) -> None:
        super()._init_data(tokenizer, [e for pair in examples for e in pair])
        self.examples = list(examples)

    def _checked_validation(self, pairs: Sequence[PreferenceExample]) -> list[PreferenceExample]:
        if any(not isinstance(pair, PreferenceExample) for pair in pairs):
            raise ValueError("a DPO job's validation examples must be preference pairs "
                             "(encode them with preference.encode_preference_record)")
        checked_examples([e for pair in pairs for e in pair], self.config.max_seq_len,
                         "validation ")
        return list(pairs)

    def _init_optimizer(self, saved_tensors_hooks: Any) -> None:
        super()._init_optimizer(saved_tensors_hooks)
        self._chunked = DpoChunkedTrainer(self.peft_model, self.optimizer,
                                          beta=self.config.dpo_beta,
                                          max_grad_norm=self.config.max_grad_norm,
                                          saved_tensors_hooks=saved_tensors_hooks)

    def _ensure_step(self) -> None:
        if not self._chunked.idle:
            return
        if self.eval_pending is not None:
            plan = self.validation
            if not self._valid_references:
                self._start_reference(self._valid_references, plan.groups(Evaluation.FULL),
                                      plan.batches(Evaluation.FULL))
                return
            self._chunked.start_eval(plan.batches(self.eval_pending), references=_stacked(
                self._valid_references, plan.groups(self.eval_pending)))
            return
        groups = self._schedule.groups(self.position)  # pair indices, one list per micro-batch
        missing = [[i for i in group if i not in self._references] for group in groups]
        missing = [group for group in missing if group]
        if missing:
            self._start_reference(self._references, missing,
                                  [self._collate(group) for group in missing])
            return
        self._chunked.start_step([self._collate(group) for group in groups],
                                 references=_stacked(self._references, groups))

    def _start_reference(self, into: References, groups: list[list[int]],
                         batches: list[MicroBatch]) -> None:
        self._reference_for = (into, groups)
        self._chunked.start_reference(batches)

    def _after_eval(self, loss: float, accuracy: float | None) -> None:
        if self._reference_for is None:
            super()._after_eval(loss, accuracy)
            return
        (into, groups), self._reference_for = self._reference_for, None
        for group, logps in zip(groups, self._chunked.take_reference()):
            k = len(group)
            for j, i in enumerate(group):
                into[i] = torch.stack([logps[j], logps[k + j]])

    def _valid_metrics(self, evaluation: Evaluation, loss: float, accuracy: float) -> dict:
        return valid_metrics(evaluation, self._chunked.last_eval_metrics)

    _ROWS_PER_ITEM = 2

    def _item_length(self, i: int) -> int:  # a pair's two sequences are padded together
        pair = self.examples[i]
        return max(len(pair.preferred.input_ids), len(pair.non_preferred.input_ids))

    def _collate(self, pairs: list[int]) -> MicroBatch:
        return collate_pairs([self.examples[i] for i in pairs], self.pad_id)

    def _step_event(self, metrics: dict) -> None:
        # A DPO step has no token accuracy (its head counts no hits): its accuracy is the
        # reward accuracy, so the supervised field is left out, not sent as 0.
        metrics = {k: v for k, v in metrics.items() if k != "train_mean_token_accuracy"}
        m = self._chunked.last_metrics  # the last trained step's (an evaluation keeps it)
        if m is not None and "train_reward_margin" not in metrics:
            metrics.update(train_chosen_reward=m.chosen_reward,
                           train_rejected_reward=m.rejected_reward,
                           train_reward_margin=m.reward_margin,
                           train_reward_accuracy=m.reward_accuracy)
        super()._step_event(metrics)

    def _emit(self, kind: str, message: str, data: dict) -> None:
        if kind == "step" and "train_reward_margin" in data:
            message = f"{message}, reward margin {data['train_reward_margin']:.4f}"
        super()._emit(kind, message, data)

    def close(self) -> nn.Module:
        self._reference_for = None
        return super().close()


def _stacked(references: References, groups: list[list[int]]) -> list[torch.Tensor]:
    """Per micro-batch, its pairs' references as rows ``[preferred..., non-preferred...]``."""
    return [torch.cat([references[i][0:1] for i in group] + [references[i][1:2] for i in group])
            for group in groups]
