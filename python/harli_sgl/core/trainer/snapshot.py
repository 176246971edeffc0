"""A trainer's state copied out at a step boundary, to be written anywhere, on any thread.

Writing a checkpoint means serialising the adapter, the optimizer's moments and
an fsync of every file: tens of milliseconds on a fast disk, seconds on a slow
or nearly full one. The live tensors cannot be written while training goes on
(the next step mutates them in place, and a half-updated checkpoint would not
resume), and training should not wait for a disk. So a :class:`Snapshot` copies
what a checkpoint or an adapter directory holds, which for LoRA is a few
megabytes: the adapter's weights (PEFT state-dict keys, adapter name removed),
the adapter's config, and for a checkpoint the optimizer state and the job's
``state.json`` contents. Every tensor is copied to the CPU, so the snapshot
shares no storage with the model, needs no device to be written, and can
outlive the trainer (a finished job's adapter is written after its LoRA layers
are unloaded).

:meth:`Snapshot.write` produces the same files PEFT's ``save_pretrained``
does (``adapter_model.safetensors`` with ``{"format": "pt"}`` metadata and
``adapter_config.json`` in inference mode), less PEFT's generated model card,
and publishes the directory in one rename (see :mod:`.checkpoint`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict
from safetensors.torch import save_file

from harli_sgl.core.trainer.checkpoint import (ADAPTER_FILES, OPTIMIZER_FILE, STATE_FILE,
                                              write_dir_atomically, write_json)


@dataclass(frozen=True)
class Snapshot:
    """Private CPU copies of an adapter (and, for a checkpoint, its optimizer and position).

    Args:
        adapter: PEFT state dict of the adapter (what ``adapter_model.safetensors`` holds).
        lora_config: the adapter's config, as ``adapter_config.json`` will hold it.
        optimizer: ``optimizer.state_dict()`` with every tensor copied; None for an adapter.
        state: the JSON-able ``state.json`` contents; None for an adapter.
    """

    adapter: dict[str, torch.Tensor]
    lora_config: LoraConfig
    optimizer: dict | None = None
    state: dict | None = None

    @property
    def nbytes(self) -> int:
        tensors = list(self.adapter.values()) + _tensors(self.optimizer)
        return sum(t.numel() * t.element_size() for t in tensors)

    def write(self, path: str) -> None:
        """Write the directory at ``path`` atomically."""

        def fill(tmp: str) -> None:
            save_file(self.adapter, os.path.join(tmp, ADAPTER_FILES[0]), metadata={"format": "pt"})
            self.lora_config.save_pretrained(tmp)
            if self.optimizer is not None:
                torch.save(self.optimizer, os.path.join(tmp, OPTIMIZER_FILE))
            if self.state is not None:
                write_json(os.path.join(tmp, STATE_FILE), self.state)

        write_dir_atomically(path, fill)


def take(peft_model: PeftModel, optimizer: torch.optim.Optimizer | None = None,
         state: dict | None = None) -> Snapshot:
    """Copy ``peft_model``'s default adapter (and ``optimizer``'s state) out of the live model."""
    adapter = {k: _cpu_copy(v) for k, v in get_peft_model_state_dict(peft_model).items()}
    config = copy.deepcopy(peft_model.peft_config["default"])
    # As PEFT's save_pretrained records it: a saved adapter is loaded for inference.
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = \
            peft_model.base_model.model.__dict__.get("name_or_path", None) or None
    config.inference_mode = True
    opt = _copied(optimizer.state_dict()) if optimizer is not None else None
    return Snapshot(adapter, config, opt, copy.deepcopy(state))


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # A copy even on the CPU: the live tensor changes at the next optimizer step.
    return t.detach().to("cpu", copy=True).contiguous()


def _copied(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return _cpu_copy(obj)
    if isinstance(obj, dict):
        return {k: _copied(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copied(v) for v in obj)
    return copy.deepcopy(obj)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []
