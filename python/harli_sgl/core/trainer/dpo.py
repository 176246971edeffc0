"""DPO on the layer-chunked trainer: the same pieces, another head, and a reference pass.

Direct Preference Optimization trains on pairs (prompt, preferred answer ``c``,
non-preferred answer ``r``). With ``logp(x)`` the summed log-probability of an
answer's tokens given its prompt, the policy ``pi`` (base + LoRA) and the
reference ``ref``, the loss of a pair is DPO's sigmoid loss::

    -log sigmoid(beta * ((logp_pi(c) - logp_ref(c)) - (logp_pi(r) - logp_ref(r))))

and a step's loss is its mean over the step's pairs. With LoRA the reference is
the base model itself with the adapter switched off, which the trainer already
holds (zero-copy with the server), so DPO needs no second model.

A DPO micro-batch is one :class:`~.data.MicroBatch` of ``2k`` rows: the ``k``
preferred sequences, then the ``k`` non-preferred ones, in pair order (see
:func:`.preference.collate_pairs`). It runs through exactly the pieces of a
supervised step; only the head piece differs (:meth:`DpoChunkedTrainer._head`):
it turns the last layer's output into per-row log-probs and the micro-batch's
share of the step's DPO loss, and accumulates the step's preference metrics.

The reference log-probs come from a *reference step*
(:meth:`DpoChunkedTrainer.start_reference`): an evaluation step (forward pieces
only, no graph, dropout off) with the adapter disabled for each of its pieces,
so it, too, runs only inside slots. Its result is read with
:meth:`DpoChunkedTrainer.take_reference`; the caller keeps it per example (the
base model never changes), so each example's reference is computed once.

Validation is an *evaluation step* with references
(:meth:`DpoChunkedTrainer.start_eval`): the same forward pieces with the adapter
*on*, whose head scores the policy against the kept references. It ends in the
mean DPO loss over its pairs and sets :attr:`DpoChunkedTrainer.last_eval_metrics`;
:attr:`DpoChunkedTrainer.last_metrics` stays the last *trained* step's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from harli_sgl.core.trainer.chunked import ChunkedStep, ChunkedTrainer, MicroState
from harli_sgl.core.trainer.data import IGNORE_INDEX, MicroBatch
from harli_sgl.core.trainer.stack import HeadOut


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability (fp32) of its supervised label tokens.

    Token ``t`` is predicted from positions ``< t`` (the causal shift HF's loss uses).
    """
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = torch.gather(logits.log_softmax(-1), 2,
                          targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


class DpoTerms(NamedTuple):
    """Per-pair losses and the implicit rewards ``beta * (logp_pi - logp_ref)``."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_terms(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> DpoTerms:
    """DPO's sigmoid loss for rows ``[preferred..., non-preferred...]`` of log-probs."""
    k = policy.shape[0] // 2
    chosen = beta * (policy[:k] - reference[:k])
    rejected = beta * (policy[k:] - reference[k:])
    return DpoTerms(-F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach())


class PreferenceMetrics(NamedTuple):
    """Means over one step's (or evaluation's) pairs; the fields of a DPO ``metrics`` event."""

    loss: float
    chosen_reward: float  # mean of beta * (logp_pi - logp_ref) of the preferred answers
    rejected_reward: float
    reward_margin: float  # chosen_reward - rejected_reward
    reward_accuracy: float  # fraction of pairs whose preferred answer has the higher reward


class DpoChunkedTrainer(ChunkedTrainer):
    """A :class:`ChunkedTrainer` whose steps minimise DPO's loss against the adapter-off model.

    Args:
        peft_model, optimizer, max_grad_norm, saved_tensors_hooks: as for ChunkedTrainer.
        beta: DPO's beta (how far the policy may move from the reference).

    Example::

        trainer.start_reference(mbs)          # pieces, in slots, adapter off
        ...run until idle...
        refs = trainer.take_reference()       # one tensor of 2k log-probs per micro-batch
        trainer.start_step(mbs, references=refs)
        ...run until idle...
        trainer.last_metrics                  # PreferenceMetrics of that step
        trainer.start_eval(valid_mbs, references=valid_refs)  # adapter on, nothing trained
        ...run until idle...
        trainer.last_eval_metrics             # PreferenceMetrics of the held-out pairs
    """

    def __init__(self, peft_model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 beta: float, **kwargs) -> None:
        super().__init__(peft_model, optimizer, **kwargs)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        self._tuner_layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
        self._references: list[torch.Tensor] | None = None  # of the step in flight
        self._reference_out: list[torch.Tensor] = []
        self._computing_reference = False
        self._sums: torch.Tensor | None = None
        self.last_metrics: PreferenceMetrics | None = None  # of the last trained step
        self.last_eval_metrics: PreferenceMetrics | None = None  # of the last evaluation

    @property
    def computing_reference(self) -> bool:
        return self._computing_reference and not self.idle

    def start_reference(self, micro_batches: Sequence[MicroBatch]) -> None:
        """Start a reference step: the adapter-off log-probs of every row, nothing trained."""
        _check_pairs(micro_batches)
        super().start_step(micro_batches, evaluate=True)
        self._computing_reference, self._reference_out = True, []

    def take_reference(self) -> list[torch.Tensor]:
        """The finished reference step's log-probs, one CPU tensor of ``2k`` per micro-batch."""
        if not self.idle or not self._computing_reference:
            raise RuntimeError("no finished reference step to take")
        out, self._reference_out, self._computing_reference = self._reference_out, [], False
        return out

    def start_step(self, micro_batches: Sequence[MicroBatch], evaluate: bool = False, *,
                   references: Sequence[torch.Tensor] | None = None) -> None:
        """Start a DPO step; ``references[i]`` are micro-batch ``i``'s reference log-probs."""
        _check_pairs(micro_batches)
        rows = [(mb.input_ids.shape[0],) for mb in micro_batches]
        if references is None or [tuple(ref.shape) for ref in references] != rows:
            raise ValueError("a DPO step needs one reference log-prob per row of every "
                             "micro-batch (see start_reference)")
        super().start_step(micro_batches, evaluate)
        self._computing_reference = False
        self._references = [ref.to(self.stack.device, torch.float32) for ref in references]
        self._sums = None

    def start_eval(self, micro_batches: Sequence[MicroBatch], *,
                   references: Sequence[torch.Tensor] | None = None) -> None:
        """Start an evaluation step: the DPO loss of the policy (adapter on, dropout off)
        against ``references``, nothing trained; its metrics land in ``last_eval_metrics``."""
        self.start_step(micro_batches, evaluate=True, references=references)

    def abort_step(self) -> None:
        super().abort_step()
        self._references, self._reference_out, self._computing_reference = None, [], False

    def _execute_eval(self, step: ChunkedStep, state: MicroState, piece) -> None:
        if not self._computing_reference:  # an evaluation scores the policy: adapter on
            super()._execute_eval(step, state, piece)
            return
        # The reference is the base model: the adapter is off for exactly this piece.
        for layer in self._tuner_layers:
            layer.enable_adapters(False)
        try:
            super()._execute_eval(step, state, piece)
        finally:
            for layer in self._tuner_layers:
                layer.enable_adapters(True)

    def _head(self, step: ChunkedStep, state: MicroState, hidden: torch.Tensor) -> HeadOut:
        # No token hits: DPO's accuracy is the reward accuracy (PreferenceMetrics), and a
        # DPO step's mean token accuracy is not reported (RunResult.accuracy is 0 here).
        logits = self.stack.lm_head(self.stack.norm(hidden))
        logps = sequence_logps(logits, state.batch.labels)
        if self._computing_reference:
            self._reference_out.append(logps.detach().cpu())
            return HeadOut(logps.new_zeros(()), 0)
        terms = dpo_terms(logps, self._references[step.micro_index], self.beta)
        pairs = sum(mb.input_ids.shape[0] for mb in step.micro_batches) // 2
        chosen, rejected = terms.chosen_rewards, terms.rejected_rewards
        sums = torch.stack([terms.losses.detach().sum(), chosen.sum(), rejected.sum(),
                            (chosen > rejected).float().sum()])
        self._sums = sums if self._sums is None else self._sums + sums
        if step.micro_index == len(step.micro_batches) - 1:
            loss, c, r, acc = (float(x) / pairs for x in self._sums)
            metrics = PreferenceMetrics(loss, c, r, c - r, acc)
            if step.evaluate:
                self.last_eval_metrics = metrics
            else:
                self.last_metrics = metrics
        return HeadOut(terms.losses.sum() / pairs, 0)


def _check_pairs(micro_batches: Sequence[MicroBatch]) -> None:
    for mb in micro_batches:
        if mb.input_ids.shape[0] % 2:
            raise ValueError("a DPO micro-batch holds preferred then non-preferred rows: "
                             f"an even number of rows, got {mb.input_ids.shape[0]}")
