"""Expose SGLang's serving weights to the finetune worker without copying them.

On CPU the parameters are moved into shared memory in place (``share_memory_``
swaps each storage's backing to a shared mapping; every view, including the
model's own, follows). On GPU nothing moves: CUDA tensors cross to the worker
as CUDA IPC handles. Either way the tensors are handed to the worker through
multiprocessing's spawn pickling, which torch extends (``torch.multiprocessing``
must be imported for that) to send file descriptors or IPC handles, never bytes.
The names stay SGLang's (fused ``qkv_proj``/``gate_up_proj``); the worker maps
them to HF names as row views (:mod:`harli_sgl.core.shared_weights`).
"""

from __future__ import annotations

import torch
import torch.multiprocessing  # noqa: F401  (registers tensor reductions used by spawn)


def share_serving_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    shared: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensor = param.data
        if tensor.device.type == "cpu":
            tensor.share_memory_()
        shared[name] = tensor
    return shared
