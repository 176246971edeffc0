"""What a job's checkpoint records beside its tensors, and resuming from it exactly.

Together with the adapter weights and the optimizer state (see
:mod:`.snapshot`), :func:`state_of` is all a resumed run needs to end with the
same adapter as an uninterrupted one: the data position, the counters, the
job's private RNG stream, and the config and examples it was trained on.
:func:`read_resumable` refuses a checkpoint whose config differs (except in
:data:`RESUMABLE_CHANGES`) or whose examples are not the job's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from harli_sgl.core.trainer.checkpoint import ADAPTER_FILES, OPTIMIZER_FILE, read_state
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import DataPosition, Example
from harli_sgl.core.trainer.validation import Evaluation

if TYPE_CHECKING:
    from harli_sgl.core.trainer.job_trainer import JobTrainer

STATE_FORMAT = 1
# Operational settings a resumed job may change; everything else must match.
RESUMABLE_CHANGES = ("checkpoint_every_steps", "micro_batch_tokens")


def state_of(t: JobTrainer) -> dict:
    return {
        "format": STATE_FORMAT,
        "position": asdict(t.position),
        "completed_steps": t.completed_steps,
        "trained_tokens": t.trained_tokens,
        "last_loss": t.last_loss,
        "last_metrics": t.last_metrics,
        "eval_pending": None if t.eval_pending is None else t.eval_pending.value,
        "step_metrics": t._step_metrics,
        "checkpoint_after_eval": t._checkpoint_after_eval,
        "rng": t.rng.state_dict(),
        "config": asdict(t.config),
        "n_examples": len(t.examples),
        "examples_sha256": t.examples_sha256(),
    }


def read_resumable(checkpoint: str, config: TrainConfig, examples: Sequence[Example]) -> dict:
    """The checkpoint's state, once it is known to belong to this job's config and examples."""
    state = read_state(checkpoint)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{checkpoint}: unsupported checkpoint format {state.get('format')!r}")
    saved, now = state["config"], json.loads(json.dumps(asdict(config)))
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        raise ValueError(f"{checkpoint}: config differs from the checkpoint's in {changed}")
    if state["n_examples"] != len(examples) or state["examples_sha256"] != fingerprint(examples):
        raise ValueError(f"{checkpoint}: the training examples differ from the checkpoint's")
    return state


def restore(t: JobTrainer, checkpoint: str, state: dict) -> None:
    """Position a freshly built trainer exactly where ``checkpoint`` was written."""
    weights = load_file(os.path.join(checkpoint, ADAPTER_FILES[0]), device=str(t.device))
    result = set_peft_model_state_dict(t.peft_model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"{checkpoint}: adapter does not match the job's LoRA config "
                         f"(unexpected {result.unexpected_keys[:3]}, missing {missing[:3]})")
    t.optimizer.load_state_dict(torch.load(os.path.join(checkpoint, OPTIMIZER_FILE),
                                           map_location=t.device, weights_only=True))
    t.rng.load_state_dict(state["rng"])
    t.position = DataPosition(**state["position"])
    t.completed_steps = state["completed_steps"]
    t.trained_tokens = state["trained_tokens"]
    t.last_loss = state["last_loss"]
    # Checkpoints written before the validation metrics hold only last_valid_loss, and
    # eval_pending as a bool (an epoch's evaluation: of the whole validation set now).
    t.last_metrics = state.get("last_metrics") or {"train_loss": t.last_loss}
    pending = state.get("eval_pending")
    pending = Evaluation.FULL.value if pending is True else pending or None
    t.eval_pending = Evaluation(pending) if pending and t.validation else None
    t._step_metrics = state.get("step_metrics") if t.eval_pending else None
    t._checkpoint_after_eval = bool(state.get("checkpoint_after_eval")) and bool(t.eval_pending)


def fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        # A NamedTuple dumps as a list: an Example as [ids, labels] and a DPO pair as two of those.
        h.update(json.dumps(e).encode())
    return h.hexdigest()
