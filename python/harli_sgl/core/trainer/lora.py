"""The job's LoRA layers, put into the serving model in place and taken out again.

PEFT wraps the base model *in place*: the job trains against the very tensors
that serve (zero-copy). :func:`wrap_in_place` verifies it (the frozen
parameters are exactly the base model's storage) and seeds LoRA's
initialisation from the job without disturbing the process's RNG;
:func:`unwrap` removes the layers and restores every base parameter's
``requires_grad``.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from harli_sgl.core.trainer.config import TrainConfig


def wrap_in_place(base_model: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, dict[str, bool]]:
    """The PEFT model over ``base_model``, and each base parameter's ``requires_grad`` before."""
    if any(isinstance(m, BaseTunerLayer) for m in base_model.modules()):
        raise ValueError("base_model already carries adapter layers; close() the job "
                         "that owns it first")
    requires_grad = {n: p.requires_grad for n, p in base_model.named_parameters()}
    base_storage = {p.data_ptr() for p in base_model.parameters()}
    config = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                        lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules),
                        bias="none")
    device = next(base_model.parameters()).device
    cuda = [device.index] if device.type == "cuda" else []  # CUDA tensors carry an index
    # Seed LoRA's init from the job, without disturbing the process's RNG.
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(cfg.seed)
        peft_model = get_peft_model(base_model, config)
    peft_model.train()
    frozen = {p.data_ptr() for p in peft_model.parameters() if not p.requires_grad}
    if frozen != base_storage:
        raise RuntimeError("wrapping the base model copied or dropped base weights; "
                           "the job must train against the serving tensors in place")
    return peft_model, requires_grad


def unwrap(peft_model: nn.Module, requires_grad: dict[str, bool]) -> nn.Module:
    """Take the LoRA layers out again; returns the base model as it was."""
    base = peft_model.base_model.unload()
    for name, p in base.named_parameters():
        p.requires_grad_(requires_grad.get(name, p.requires_grad))
    return base
