"""One finetune job end to end: LoRA model, optimizer, data schedule, events, checkpoints.

:class:`JobTrainer` owns everything a job needs on top of :class:`ChunkedTrainer`
and nothing about where it runs: no database, no process, no sockets. The
caller (the finetune worker) feeds it budgets through :meth:`JobTrainer.run`,
learns about progress through the ``on_event`` callback, and chooses where
checkpoints go through ``checkpoint_dir(step)``. It also chooses when and on
which thread they are written: a due checkpoint (and the final adapter) is
handed out as a :class:`~.snapshot.Snapshot`, a copy that training does not
touch, so a worker can write it in the background while the job trains on.

The base model is wrapped *in place* by PEFT (:mod:`.lora`), so the job trains
against the very tensors that serve. The schedule is a pure function of
``(seed, epoch, step)`` (:mod:`.micro_batches`), which is what lets a checkpoint
(:mod:`.resume`) resume exactly.

Every step's ``step`` event carries OpenAI's metrics: ``train_loss`` and
``train_mean_token_accuracy``, and with validation examples, on the steps
:mod:`.validation` plans, ``valid_loss`` and ``valid_mean_token_accuracy`` (a
sample) or also ``full_valid_*`` (all of them: at each checkpoint and after the
last step). Such a step's event waits until its evaluation has run, in
forward-only pieces through the same budgets (so it, too, only runs inside
slots), so one event holds the step's numbers. Evaluation runs without dropout
and without touching the RNG stream, so it changes nothing about training; a
checkpoint is due only after its step's full evaluation (it carries the full
numbers), a pending evaluation is part of the checkpoint, and a job is done only
after its last evaluation.

A loss that is NaN or infinite (a diverged run: too high a learning rate or
LoRA scaling) raises :class:`TrainingDiverged` naming the step: every later
step would only train on garbage, and the job must not "succeed" with an
adapter that produces it.

Hyperparameters fixed here: AdamW with betas (0.9, 0.999), eps 1e-8 and no
weight decay (LoRA matrices are small and start at B=0; decaying them only
pulls the adapter towards the base model), at a constant learning rate.

The module stays whole above 300 lines because :class:`JobTrainer` is one state
machine (step, evaluation, checkpoint due or deferred, done) whose transitions
read best side by side; LoRA wrapping and resuming are already their own modules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harli_sgl.core.gpu import precision
from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.trainer import lora, micro_batches, resume, snapshot, validation
from harli_sgl.core.trainer.chunked import ChunkedTrainer, RunResult, SavedTensorsHooks
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataPosition, Example, MicroBatch, checked_examples, collate
from harli_sgl.core.trainer.validation import Evaluation, ValidationPlan
from harli_sgl.core.trainer.rng import RngStream
from harli_sgl.core.trainer.reports import (CHECKPOINT_METRICS, DueCheckpoint,  # noqa: F401
                                            EventCallback, Progress, TrainingDiverged,
                                            check_finite)
from harli_sgl.core.trainer.snapshot import Snapshot

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.0
class JobTrainer:
    """Trains one LoRA adapter on ``examples`` in budgeted pieces.

    Args:
        base_model: an HF Llama/Qwen2 causal LM; wrapped in place, never copied.
        tokenizer: the model's tokenizer (for its pad id).
        examples: encoded training examples (see :func:`data.encode_record`).
        config: the job's :class:`TrainConfig`.
        on_event: ``on_event(kind, message, data)`` for ``step`` (its metrics),
            ``epoch``, ``checkpoint`` and ``done``.
        checkpoint_dir: ``checkpoint_dir(step) -> path``; required to checkpoint.
        saved_tensors_hooks: forwarded to :class:`ChunkedTrainer`.
        validation_examples: encoded examples to evaluate (optional, see :mod:`.validation`).
    """

    checkpoint_metrics = CHECKPOINT_METRICS  # what a checkpoint records of its step's metrics
    _collate_validation = staticmethod(collate)  # a validation micro-batch (DPO: of pairs)

    def __init__(self, base_model: nn.Module, tokenizer: Any, examples: Sequence[Example],
                 config: TrainConfig, *, on_event: EventCallback | None = None,
                 checkpoint_dir: Callable[[int], str] | None = None,
                 saved_tensors_hooks: SavedTensorsHooks | None = None,
                 validation_examples: Sequence[Example] = ()) -> None:
        self.config = config
        self._on_event = on_event
        self._checkpoint_dir = checkpoint_dir
        self.checkpoint_due = False
        self._checkpoint_deferred = False
        self._fingerprint: str | None = None
        self._init_data(tokenizer, examples)
        self.validation_examples = self._checked_validation(validation_examples)
        self._init_model(base_model)
        self._init_optimizer(saved_tensors_hooks)
        self._init_schedule()
        self.validation = ValidationPlan(self.validation_examples, config.micro_batch_size,
                                         self.pad_id, config.seed, self.total_steps,
                                         self._collate_validation)

    def _init_data(self, tokenizer: Any, examples: Sequence[Example]) -> None:
        if not examples:
            raise ValueError("a job needs at least one training example")
        self.examples = checked_examples(examples, self.config.max_seq_len)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        self.pad_id = int(pad)

    def _checked_validation(self, examples: Sequence[Example]) -> list[Example]:
        return checked_examples(examples, self.config.max_seq_len, "validation ")

    def _init_model(self, base_model: nn.Module) -> None:
        self.peft_model, self._base_requires_grad = lora.wrap_in_place(base_model, self.config)
        self.device = next(base_model.parameters()).device

    def _init_optimizer(self, saved_tensors_hooks: SavedTensorsHooks | None) -> None:
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, betas=ADAM_BETAS,
                                           eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
        # Serving weights in bf16 on a GPU: autocast to it over fp32 LoRA weights and
        # optimizer state; fp16 weights are refused (no loss scaler; core/gpu/precision.py).
        base = next((p for p in self.peft_model.parameters() if not p.requires_grad), params[0])
        weights = str(base.dtype).removeprefix("torch.")
        autocast = precision.autocast_for(self.device.type == "cuda", weights)
        self._chunked = ChunkedTrainer(self.peft_model, self.optimizer,
                                       max_grad_norm=self.config.max_grad_norm,
                                       saved_tensors_hooks=saved_tensors_hooks,
                                       autocast_dtype=getattr(torch, autocast) if autocast else None)
        self.rng = RngStream(self.config.seed, self.device)

    def _init_schedule(self) -> None:
        self.steps_per_epoch = math.ceil(len(self.examples) / self.config.batch_size)
        self.total_steps = self.steps_per_epoch * self.config.n_epochs
        self.position = DataPosition(0, 0)
        self.completed_steps = 0
        self.trained_tokens = 0
        self.last_loss: float | None = None
        self.last_metrics: dict = {}  # the last step event's metrics
        self.eval_pending: Evaluation | None = None
        self._step_metrics: dict | None = None  # a step's event, waiting for its evaluation
        self._checkpoint_after_eval = False
        self._epoch_event: dict | None = None  # follows its step's event
        self._schedule = micro_batches.StepSchedule(len(self.examples), self.config,
                                                    self._item_length, self._ROWS_PER_ITEM)
        self._started_at: float | None = None
        self._session_tokens = 0

    @property
    def done(self) -> bool:
        return self.completed_steps >= self.total_steps and self.eval_pending is None

    @property
    def holds_activations(self) -> bool:
        """A micro-batch is between its forward and its backward (see ChunkedTrainer)."""
        return self._chunked.holds_activations

    @property
    def units_to_release(self) -> int:
        """Units to the end of the micro-batch whose activations are held (0: none held)."""
        return self._chunked.units_to_release

    @property
    def min_piece_units(self) -> int:
        """Units of the next piece (0 once done); prepares the next step if needed."""
        if self.done:
            return 0
        self._ensure_step()
        return self._chunked.min_piece_units

    @property
    def remaining_step_units(self) -> int:
        """Units to the end of the current (or, between steps, the next) step; 0 once done.

        A budget of exactly this much ends the call on a step boundary, e.g. to
        finish the step before the worker gives memory back.
        """
        if self.done:
            return 0
        self._ensure_step()
        return self._chunked.remaining_units

    @property
    def progress(self) -> Progress:
        rate = 0.0
        if self._started_at is not None:
            rate = self._session_tokens / max(time.perf_counter() - self._started_at, 1e-9)
        return Progress(self.completed_steps, self.total_steps, self.position.epoch,
                        self.trained_tokens, self.last_loss, rate)

    def run(self, budget_units: int, deadline: float | None = None) -> RunResult:
        """Run pieces (across step boundaries) within ``budget_units`` and before ``deadline``.

        A step's event fires inside the call that finishes the step, or its
        evaluation when one is due. When that step is due for a checkpoint (after
        its evaluation) the call stops there, and the caller takes it with
        :meth:`take_due_checkpoint` or :meth:`write_due_checkpoint`, or defers it
        with :meth:`defer_checkpoint` (a call that finds it still due writes it
        first, here).
        """
        if self.checkpoint_due:
            self.write_due_checkpoint()  # a caller that never wrote it still gets it, late
        if self._started_at is None:
            self._started_at = time.perf_counter()
        work, tokens, trained, loss = NO_SLOT, 0, 0, None
        while not self.done:
            self._ensure_step()
            evaluating = self._chunked.evaluating
            with self.rng.active():
                r = self._chunked.run(budget_units - work.units, deadline)
            work, tokens, trained = work + r.work, tokens + r.tokens, trained + r.trained_tokens
            self.trained_tokens += r.trained_tokens
            self._session_tokens += r.trained_tokens
            if not r.step_done:
                break
            check_finite(r.loss, "validation" if evaluating else "training",
                         self.completed_steps + (not evaluating), self.total_steps, self.config)
            if evaluating:
                self._after_eval(r.loss, r.accuracy)
            else:
                loss = r.loss
                self._after_step(r.loss, r.accuracy)
            if self.checkpoint_due:
                break
        return RunResult(work, tokens, trained, loss is not None, loss)

    def upcoming_pieces(self, limit: int) -> list:
        """The pieces the next ``run`` would execute, in order (within the current step)."""
        if self.done:
            return []
        self._ensure_step()
        return self._chunked.upcoming_pieces(limit)

    def _ensure_step(self) -> None:
        if not self._chunked.idle:
            return
        if self.eval_pending is not None:
            self._chunked.start_eval(self.validation.batches(self.eval_pending))
        else:
            self._chunked.start_step(self._micro_batches(self.position))

    _ROWS_PER_ITEM = 1  # sequences per training item (a DPO pair has two)

    def _item_length(self, i: int) -> int:
        return len(self.examples[i].input_ids)

    def _micro_batches(self, position: DataPosition) -> list[MicroBatch]:
        return [collate([self.examples[i] for i in group], self.pad_id)
                for group in self._schedule.groups(position)]

    def _after_step(self, loss: float, accuracy: float) -> None:
        self.completed_steps += 1
        self.last_loss = loss
        epoch, step = self.position.epoch, self.position.step + 1
        epoch_done = step == self.steps_per_epoch
        self.position = DataPosition(epoch + 1, 0) if epoch_done else DataPosition(epoch, step)
        p = self.progress
        metrics = {"step": p.step, "total_steps": p.total_steps, "train_loss": loss,
                   "train_mean_token_accuracy": accuracy, "trained_tokens": p.trained_tokens,
                   "tokens_per_s": p.tokens_per_s}
        if epoch_done:
            self._epoch_event = {"epoch": epoch + 1, "n_epochs": self.config.n_epochs,
                                 "step": p.step}
        every = self.config.checkpoint_every_steps
        checkpoint = bool(every) and self._checkpoint_dir is not None and \
            (self.completed_steps % every == 0 or self._checkpoint_deferred)
        self._checkpoint_deferred = False
        self.eval_pending = self.validation.due(self.completed_steps, checkpoint)
        if self.eval_pending is not None:  # the step's event waits for its evaluation
            self._step_metrics, self._checkpoint_after_eval = metrics, checkpoint
            return
        self._step_event(metrics)
        self.checkpoint_due = checkpoint
        self._maybe_done()

    def _after_eval(self, loss: float, accuracy: float) -> None:
        evaluation, self.eval_pending = self.eval_pending, None
        p = self.progress
        # A checkpoint written before its step's event (resumed there) has none waiting.
        metrics = self._step_metrics or {"step": p.step, "total_steps": p.total_steps,
                                         "train_loss": self.last_loss,
                                         "trained_tokens": p.trained_tokens}
        metrics.update(self._valid_metrics(evaluation, loss, accuracy),
                       valid_examples=self.validation.size(evaluation))
        self._step_metrics = None
        self._step_event(metrics)
        self.checkpoint_due, self._checkpoint_after_eval = self._checkpoint_after_eval, False
        self._maybe_done()

    def _valid_metrics(self, evaluation: Evaluation, loss: float, accuracy: float) -> dict:
        return validation.metrics(evaluation, loss, accuracy)

    def _step_event(self, metrics: dict) -> None:
        self.last_metrics = metrics
        message = f"step {metrics['step']}/{metrics['total_steps']}: train loss " \
                  f"{metrics['train_loss']:.4f}"
        if "valid_loss" in metrics:
            message += f", validation loss {metrics['valid_loss']:.4f}"
        self._emit("step", message, metrics)
        epoch, self._epoch_event = self._epoch_event, None
        if epoch is not None:
            self._emit("epoch", f"epoch {epoch['epoch']}/{epoch['n_epochs']} completed", epoch)

    def _maybe_done(self) -> None:
        if self.done:
            p = self.progress
            data = {"step": p.step, "total_steps": p.total_steps,
                    "trained_tokens": p.trained_tokens, "train_loss": self.last_loss}
            data.update({k: v for k, v in self.last_metrics.items() if k.startswith("full_")})
            self._emit("done", f"training completed after {p.step} steps", data)

    def take_due_checkpoint(self) -> DueCheckpoint | None:
        """Snapshot the checkpoint the last finished step asked for, to be written elsewhere.

        ``run`` stops at the step boundary when a checkpoint is due, so the caller
        takes it outside its time-critical slot. The snapshot is a copy: training
        may go on while it is written (on another thread), and the caller reports
        it with :meth:`checkpoint_written` once it is on disk.
        """
        if not self.checkpoint_due:
            return None
        self.checkpoint_due, step = False, self.completed_steps
        metrics = {k: v for k, v in self.last_metrics.items() if k in self.checkpoint_metrics}
        return DueCheckpoint(step, self._checkpoint_dir(step), self.snapshot_checkpoint(),
                             {"step": step, **metrics})

    def defer_checkpoint(self) -> None:
        """Skip the due checkpoint for now; the next step boundary asks for one again.

        For a caller that cannot write it yet (its previous checkpoint is still
        being written): the job's next checkpoint comes one step later instead of
        ``checkpoint_every_steps`` later.
        """
        if self.checkpoint_due:
            self.checkpoint_due = False
            self._checkpoint_deferred = not self.done

    def checkpoint_written(self, due: DueCheckpoint) -> None:
        """Report ``due`` as written (the ``checkpoint`` event)."""
        self._emit("checkpoint", f"checkpoint written at step {due.step}",
                   {"step": due.step, "path": due.path, "metrics": due.metrics})

    def write_due_checkpoint(self) -> str | None:
        """Take and write the due checkpoint here and now; returns its path."""
        if (due := self.take_due_checkpoint()) is None:
            return None
        due.snapshot.write(due.path)
        self.checkpoint_written(due)
        return due.path

    def _emit(self, kind: str, message: str, data: dict) -> None:
        if self._on_event is not None:
            self._on_event(kind, message, data)

    def snapshot_adapter(self) -> Snapshot:
        """A copy of the adapter to write in PEFT format (see :mod:`.snapshot`)."""
        return snapshot.take(self.peft_model)

    def save_adapter(self, path: str) -> None:
        """Write the adapter in PEFT format (loadable with ``PeftModel.from_pretrained``)."""
        self.snapshot_adapter().write(path)

    def snapshot_checkpoint(self) -> Snapshot:
        """A copy of adapter, optimizer state and data position; only between steps."""
        if self._chunked.mid_step:
            raise RuntimeError("cannot checkpoint in the middle of a step")
        return snapshot.take(self.peft_model, self.optimizer, resume.state_of(self))

    def save_checkpoint(self, path: str) -> None:
        """Write adapter, optimizer state and data position atomically; only between steps."""
        self.snapshot_checkpoint().write(path)

    def examples_sha256(self) -> str:
        # Hashing every example takes long for a large file: once per job, not per checkpoint.
        if self._fingerprint is None:
            self._fingerprint = resume.fingerprint(self.examples)
        return self._fingerprint

    @classmethod
    def resume(cls, checkpoint: str, base_model: nn.Module, tokenizer: Any,
               examples: Sequence[Example], config: TrainConfig, **kwargs: Any) -> JobTrainer:
        """A trainer positioned exactly where ``checkpoint`` was written."""
        state = resume.read_resumable(checkpoint, config, examples)
        trainer = cls(base_model, tokenizer, examples, config, **kwargs)
        resume.restore(trainer, checkpoint, state)
        return trainer

    def close(self) -> nn.Module:
        """Drop the in-flight step and take the LoRA layers out of the base model again."""
        self._chunked.abort_step()
        return lora.unwrap(self.peft_model, self._base_requires_grad)
