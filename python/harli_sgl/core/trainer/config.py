"""The hyperparameters of one finetune job, validated where they are made.

Everything that decides *what* is trained lives in :class:`TrainConfig`: a
checkpoint records it and a resumed job must present the same values (except
``checkpoint_every_steps``, which only decides how often progress is saved, and
``micro_batch_tokens``, which only bounds memory).
Validation raises ``ValueError`` naming the field, so a bad request is refused
before any model is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one job; a step trains ``batch_size`` examples in micro-batches."""

    n_epochs: int = 1
    batch_size: int = 8
    micro_batch_size: int = 8
    # A micro-batch also stays within this many padded tokens (None: no bound); see
    # micro_batches.py. It bounds memory, not what is learned.
    micro_batch_tokens: int | None = None
    learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    seed: int = 0
    max_seq_len: int = 1024
    checkpoint_every_steps: int = 0  # 0 = never
    max_grad_norm: float | None = 1.0
    dpo_beta: float | None = None  # None: supervised; else a DPO job with this beta

    def __post_init__(self) -> None:
        # Accept any sequence (JSON gives lists) but store a tuple, so configs hash.
        if isinstance(self.target_modules, str) or \
                not isinstance(self.target_modules, (list, tuple)):
            raise ValueError(f"target_modules must be a non-empty list of module names, "
                             f"got {self.target_modules!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        ints = {"n_epochs": 1, "batch_size": 1, "micro_batch_size": 1, "lora_r": 1,
                "seed": 0, "max_seq_len": 2, "checkpoint_every_steps": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.micro_batch_tokens is not None and (
                not isinstance(self.micro_batch_tokens, int) or isinstance(self.micro_batch_tokens, bool)
                or self.micro_batch_tokens < 1):
            raise ValueError(f"micro_batch_tokens must be None or an integer >= 1, "
                             f"got {self.micro_batch_tokens!r}")
        if self.micro_batch_size > self.batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must not exceed "
                             f"batch_size ({self.batch_size})")
        if not _positive(self.learning_rate):
            raise ValueError(f"learning_rate must be a finite number > 0, "
                             f"got {self.learning_rate!r}")
        if not _positive(self.lora_alpha):
            raise ValueError(f"lora_alpha must be a finite number > 0, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not self.target_modules or not all(isinstance(m, str) and m
                                              for m in self.target_modules):
            raise ValueError(f"target_modules must be a non-empty list of module names, "
                             f"got {self.target_modules!r}")
        if self.dpo_beta is not None and not _positive(self.dpo_beta):
            raise ValueError(f"dpo_beta must be None or a finite number > 0, got {self.dpo_beta!r}")
        if self.max_grad_norm is not None and not _positive(self.max_grad_norm):
            raise ValueError(f"max_grad_norm must be None or a finite number > 0, "
                             f"got {self.max_grad_norm!r}")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
