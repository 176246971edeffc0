"""Which dtypes serve and train on a GPU: never fp16 training without a loss scaler.

The worker trains LoRA against the very tensors that serve (zero-copy), so the
serving dtype is the training dtype of the frozen base. SGLang's rule for an
fp32 checkpoint is to serve it in fp16; fp16 activations' gradients underflow
without a loss scaler, and harli has none. So, on a GPU host where harli
finetunes and the operator gave no ``--dtype``: serve in bfloat16 (same
exponent range as fp32); LoRA weights and AdamW state stay fp32 (PEFT upcasts
adapter weights to fp32 by default, and AdamW's state follows its parameters);
forward pieces autocast to bfloat16. An explicit ``--dtype float16`` (or a GPU
without bfloat16, before compute capability 8.0) with finetuning is refused at
start with a message, rather than trained wrongly. fp32 serving trains in fp32
without autocast. A CPU host keeps the CPU recipe's dtype and no autocast.

The decision is unit-tested; bf16 serving and autocast on a GPU are UNTESTED.
"""

from __future__ import annotations

from typing import NamedTuple

FP16 = ("float16", "half")


class Precision(NamedTuple):
    serve_dtype: str | None      # the --dtype to add (None: leave SGLang's choice)
    autocast_dtype: str | None   # forward pieces autocast to this (None: none)
    lora_dtype: str = "float32"  # adapter weights, their grads and AdamW's state
    refused: str | None = None   # why harli will not finetune with this setup


def decide(gpu: bool, finetune: bool, dtype_flag: str | None, bf16: bool) -> Precision:
    """Args:
        gpu: a GPU host. finetune: harli trains (``--harli-mode`` not off).
        dtype_flag: SGLang's ``--dtype`` as the operator gave it (None or "auto": not given).
        bf16: the GPU computes in bfloat16 (compute capability 8.0+).
    """
    if not gpu or not finetune:
        return Precision(None, None)
    given = None if dtype_flag in (None, "auto") else dtype_flag
    if given in FP16:
        return Precision(None, None, refused=(
            "--dtype float16 with finetuning: harli trains against the serving weights and "
            "has no loss scaler, and fp16 gradients underflow without one; serve in bfloat16 "
            "(or float32), or use --harli-mode off"))
    if given is None and not bf16:
        return Precision(None, None, refused=(
            "this GPU has no bfloat16 (compute capability below 8.0), so SGLang would serve "
            "in float16, which harli cannot train in without a loss scaler; pass --dtype "
            "float32, or use --harli-mode off"))
    serve = given or "bfloat16"
    return Precision(None if given else "bfloat16",
                     None if serve in ("float32", "float") else "bfloat16")


def autocast_for(gpu: bool, weight_dtype: str) -> str | None:
    """The worker's autocast dtype, from the serving weights it maps (fp16: refused)."""
    if not gpu or weight_dtype == "float32":
        return None
    if weight_dtype in FP16:
        raise ValueError("refusing to train against float16 weights without a loss scaler")
    return weight_dtype
