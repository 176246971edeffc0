"""One optimizer step of a LoRA model, cut into layer-sized pieces that run on demand.

A slot grants the worker a few thousand token-layers of work between two decode
iterations, far less than one training step. So a step is laid out as a fixed
sequence of *pieces*, per micro-batch::

    forward layer 0 (+ embedding) .. forward layer L-1,
    head forward (final norm + lm_head + loss), head backward,
    backward layer L-1 .. backward layer 0 (+ embedding; + optimizer after the last micro-batch)

and :meth:`ChunkedTrainer.run` executes as many whole pieces as a budget allows,
stopping at any boundary and resuming there on the next call.

Boundaries are explicit: every layer's input is a *detached leaf* ``h_l`` that
requires grad, and its output keeps its own small autograd graph. Backward of
layer ``l`` is ``torch.autograd.backward(out_l, grad)``, which accumulates the
LoRA parameter grads and leaves ``dL/dh_l`` in ``h_l.grad`` for layer ``l-1``.
Between pieces only those boundary tensors and the graphs of layers not yet
backwarded are alive; a finished layer's graph is dropped at once.

The loss of micro-batch ``m`` is its summed token cross-entropy divided by the
supervised-token count of the *whole step*, so the accumulated gradient is the
gradient of HF's mean loss over one forward of the whole batch.

Units (token-layers, see :mod:`harli_sgl.core.message`), for a micro-batch of
``T`` tokens as computed (padded batch x sequence): layer forward ``T``, layer
backward ``2T``, head forward ``T``, head backward ``2T``. Counting the head
like a layer is an approximation: its cost scales with vocabulary size rather
than the layer width, which the predictor absorbs. The embedding lookup and the
optimizer step are folded into the adjacent layer pieces at no extra units.

An *evaluation step* (:meth:`ChunkedTrainer.start_eval`) is the forward half
only: ``forward layer 0 .. L-1, head forward`` per micro-batch, run without
autograd and with dropout off, ending in the mean token loss and no optimizer
update. Validation loss is computed that way, inside slots like training. Every
step, training or evaluation, also ends in its mean token accuracy: the share of
supervised tokens whose argmax prediction is the label (OpenAI's metric).

Saved activations are produced only inside forward pieces; passing
``saved_tensors_hooks=(pack, unpack)`` wraps every forward piece in
``torch.autograd.graph.saved_tensors_hooks`` so a memory pool can keep them
outside the allocator (e.g. in leased KV-cache pages).

The step's schedule (pieces, units, cursor) is :mod:`.pieces`; this module runs it.
It stays whole just above 300 lines: running a piece and the gradient bookkeeping
across piece boundaries are one algorithm, which a further split would cut in two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from harli_sgl.core.gpu.fence import Device, DeviceDeadline, device_for
from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.trainer.data import MicroBatch
from harli_sgl.core.trainer.pieces import ChunkedStep, MicroState, Piece, PieceKind, RunResult
from harli_sgl.core.trainer.stack import DecoderStack, HeadOut

__all__ = ["ChunkedStep", "ChunkedTrainer", "MicroState", "Piece", "PieceKind", "RunResult",
           "SavedTensorsHooks"]

SavedTensorsHooks = tuple[Callable[[torch.Tensor], Any], Callable[[Any], torch.Tensor]]


class ChunkedTrainer:
    """Runs optimizer steps of a PEFT LoRA model piece by piece within unit budgets.

    Args:
        peft_model: a ``PeftModel`` around a Llama/Qwen2 causal LM, in train mode.
        optimizer: an optimizer over the trainable (LoRA) parameters.
        max_grad_norm: clip the step's gradient to this global norm; ``None`` = no clipping.
        saved_tensors_hooks: ``(pack, unpack)`` applied around every forward piece.

    Example::

        trainer = ChunkedTrainer(peft_model, torch.optim.AdamW(lora_params, lr=1e-4))
        trainer.start_step([collate(examples, pad_id)])
        while not trainer.idle:
            trainer.run(budget_units=4096)
    """

    def __init__(self, peft_model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 max_grad_norm: float | None = None,
                 saved_tensors_hooks: SavedTensorsHooks | None = None,
                 autocast_dtype: torch.dtype | None = None,
                 device: Device | None = None) -> None:
        self.stack = DecoderStack(peft_model)
        self.optimizer = optimizer
        self.autocast_dtype = autocast_dtype
        self.device = device or device_for(self.stack.device.type)
        self._ms_per_unit = 0.0  # device ms per unit, learned at fences (GPU only)
        self.max_grad_norm = max_grad_norm
        self.saved_tensors_hooks = saved_tensors_hooks
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._step: ChunkedStep | None = None

    @property
    def idle(self) -> bool:
        return self._step is None

    @property
    def mid_step(self) -> bool:
        """True once a piece of the current step has run and until the step ends."""
        step = self._step
        return step is not None and (step.micro_index > 0 or step.position > 0)

    @property
    def holds_activations(self) -> bool:
        """True between a micro-batch's first forward piece and its last backward piece:
        its saved activations (the bulk of training memory) are alive."""
        step = self._step
        return step is not None and not step.evaluate and step.position > 0

    @property
    def units_to_release(self) -> int:
        """Units until the activations held now are released (0 when none are held): a
        budget of exactly this much ends on the current micro-batch's last piece."""
        return self._step.micro_batch_units if self.holds_activations else 0

    @property
    def min_piece_units(self) -> int:
        """Units of the next piece: the smallest grant that makes progress (0 when idle)."""
        return 0 if self._step is None else self._step.next_piece().units

    @property
    def remaining_units(self) -> int:
        return 0 if self._step is None else self._step.remaining_units

    def upcoming_pieces(self, limit: int) -> list[Piece]:
        """The pieces the next ``run`` calls would execute (current step only)."""
        return [] if self._step is None else self._step.upcoming(limit)

    @property
    def evaluating(self) -> bool:
        """True while the step in flight is an evaluation step."""
        return self._step is not None and self._step.evaluate

    def start_step(self, micro_batches: Sequence[MicroBatch], evaluate: bool = False) -> None:
        """Start an optimizer step, or with ``evaluate`` an evaluation step whose ``run``
        result carries the mean token loss and updates nothing."""
        if self._step is not None:
            raise RuntimeError("a step is already in flight; run it to completion or abort it")
        self._step = ChunkedStep(micro_batches, self.stack.num_layers, evaluate)

    def start_eval(self, micro_batches: Sequence[MicroBatch]) -> None:
        self.start_step(micro_batches, evaluate=True)

    def abort_step(self) -> None:
        """Drop the step in flight: its activations and its partial gradients."""
        self._step = None
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, budget_units: int, deadline: float | None = None) -> RunResult:
        """Run whole pieces while the next fits ``budget_units`` and ``deadline`` has not passed.

        Stops at the end of the current step. ``deadline`` is a ``time.perf_counter()``
        value checked before each piece (a started piece always completes), on device
        time: on a GPU the pieces queued since the last fence are waited for before
        judging it whenever their predicted time could reach it (``core/gpu/fence.py``;
        UNTESTED on a GPU). On the CPU that is the plain host clock.
        """
        if budget_units < 0:
            raise ValueError(f"budget_units must be >= 0, got {budget_units}")
        work, tokens, trained = NO_SLOT, 0, 0
        touched: set[int] = set()
        loss = accuracy = None
        clock = None if deadline is None else \
            DeviceDeadline(self.device, deadline, self._ms_per_unit)
        while self._step is not None:
            step = self._step
            piece = step.next_piece()
            if piece.units > budget_units - work.units:
                break
            if clock is not None and clock.passed():
                break
            if step.micro_index not in touched:
                touched.add(step.micro_index)
                tokens += step.real_tokens[step.micro_index]
            with self._autocast():
                self._execute(step, piece)
            if clock is not None:
                clock.launched(piece.units)
            work = work.plus(piece.kind.cost_kind, piece.units)
            finished_index = step.micro_index
            if step.advance():
                trained += 0 if step.evaluate else step.real_tokens[finished_index]
                if step.finished:
                    loss, accuracy = self._finish_step(step)
        if clock is not None and clock.observed_ms_per_unit:
            self._ms_per_unit = clock.observed_ms_per_unit
        return RunResult(work, tokens, trained, loss is not None, loss, accuracy)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Forward and backward pieces under autocast to ``autocast_dtype`` (GPU: bf16 over
        fp32 LoRA weights, ``core/gpu/precision.py``); nothing when it is None."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.stack.device.type, dtype=self.autocast_dtype)

    @contextlib.contextmanager
    def _forward_scope(self) -> Iterator[None]:
        with contextlib.ExitStack() as scope:
            scope.enter_context(torch.enable_grad())
            if self.saved_tensors_hooks is not None:
                scope.enter_context(torch.autograd.graph.saved_tensors_hooks(
                    *self.saved_tensors_hooks))
            yield

    def _execute(self, step: ChunkedStep, piece: Piece) -> None:
        if step.state is None:
            mb = step.micro_batches[step.micro_index]
            device = self.stack.device
            step.state = MicroState(MicroBatch(*(t.to(device, non_blocking=True) for t in mb)))
        state, n = step.state, self.stack.num_layers
        if step.evaluate:
            self._execute_eval(step, state, piece)
        elif piece.kind is PieceKind.FORWARD:
            with self._forward_scope():
                self._forward_layer(state, piece.layer)
        elif piece.kind is PieceKind.HEAD_FORWARD:
            with self._forward_scope():
                hidden = state.outputs[n - 1].detach().requires_grad_()
                state.inputs[n] = hidden
                state.loss, hits = self._head(step, state, hidden)
                step.hits += hits
        elif piece.kind is PieceKind.HEAD_BACKWARD:
            torch.autograd.backward(state.loss)
            step.loss_sum = state.loss.detach() if step.loss_sum is None \
                else step.loss_sum + state.loss.detach()
            state.loss = None
            state.grad = state.inputs.pop(n).grad
        else:
            self._backward_layer(state, piece.layer)

    def _execute_eval(self, step: ChunkedStep, state: MicroState, piece: Piece) -> None:
        # No graph, no saved tensors; eval mode so dropout neither perturbs the loss
        # nor draws from the job's RNG stream (a resumed job must train identically).
        model, was_training = self.stack.causal_lm, self.stack.causal_lm.training
        model.train(False)
        try:
            with torch.no_grad():
                if piece.kind is PieceKind.FORWARD:
                    if piece.layer == 0:
                        hidden = self.stack.embed(state.batch.input_ids)
                        state.ctx = self.stack.context(hidden, state.batch.attention_mask)
                    else:
                        hidden = state.outputs.pop(piece.layer - 1)
                    state.outputs[piece.layer] = self.stack.layer(piece.layer, hidden, state.ctx)
                else:
                    last = state.outputs.pop(self.stack.num_layers - 1)
                    loss, hits = self._head(step, state, last)
                    step.hits += hits
                    step.loss_sum = loss if step.loss_sum is None else step.loss_sum + loss
        finally:
            model.train(was_training)

    def _head(self, step: ChunkedStep, state: MicroState, hidden: torch.Tensor) -> HeadOut:
        """The current micro-batch's share of the step's loss, from the last layer's output,
        and its exact next-token hits (for the mean token accuracy).

        A subclass with another objective (e.g. :mod:`.dpo`) overrides this one piece.
        """
        return self.stack.head_loss(hidden, state.batch.labels, step.supervised_tokens)

    def _forward_layer(self, state: MicroState, index: int) -> None:
        if index == 0:
            embeds = self.stack.embed(state.batch.input_ids)
            state.ctx = self.stack.context(embeds, state.batch.attention_mask)
            if self.stack.embed_trainable:
                state.embeds = embeds
                hidden = embeds.detach().requires_grad_()
            else:
                hidden = embeds
        else:
            hidden = state.outputs[index - 1].detach().requires_grad_()
        state.inputs[index] = hidden
        state.outputs[index] = self.stack.layer(index, hidden, state.ctx)

    def _backward_layer(self, state: MicroState, index: int) -> None:
        out = state.outputs.pop(index)
        if out.requires_grad:
            torch.autograd.backward(out, grad_tensors=state.grad)
        hidden = state.inputs.pop(index)
        state.grad = hidden.grad if hidden.requires_grad else None
        if index == 0 and state.embeds is not None:
            torch.autograd.backward(state.embeds, grad_tensors=state.grad)
            state.embeds = None

    def _finish_step(self, step: ChunkedStep) -> tuple[float, float]:
        accuracy = step.hits / step.supervised_tokens
        if step.evaluate:
            self._step = None
            return float(step.loss_sum), accuracy
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._step = None
        return float(step.loss_sum), accuracy
