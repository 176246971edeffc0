"""An HF causal LM whose base weights *are* the serving engine's tensors.

The serving engine (SGLang) keeps fused projections: one ``qkv_proj`` per
attention block and one ``gate_up_proj`` per MLP, and pads the vocabulary of
``embed_tokens``/``lm_head`` to a multiple of 64. HF/PEFT expect separate
``q_proj``/``k_proj``/``v_proj`` and ``gate_proj``/``up_proj`` and the exact
vocabulary. Every HF tensor here is a *row view* of a serving tensor (rows
``[a, b)`` of a contiguous ``[out, in]`` matrix are themselves contiguous), so
building the training model allocates nothing: the worker maps the serving
tensors (shared memory on CPU, CUDA IPC on GPU) and wraps views of them.

Only the names matter to this module, not SGLang itself, so it runs wherever
torch and transformers do. Supported families: Llama and Qwen2 (whose q/k/v
projections carry biases; they are split the same way).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


class Geometry(NamedTuple):
    q_size: int
    kv_size: int
    intermediate: int
    vocab: int


def geometry(hf_config) -> Geometry:
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return Geometry(
        q_size=hf_config.num_attention_heads * head_dim,
        kv_size=hf_config.num_key_value_heads * head_dim,
        intermediate=hf_config.intermediate_size,
        vocab=hf_config.vocab_size,
    )


def hf_views(fused: dict[str, torch.Tensor], hf_config) -> dict[str, torch.Tensor]:
    """Map serving (fused, padded) tensors to HF parameter names, as views."""
    if hf_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"finetuning supports {SUPPORTED_MODEL_TYPES}, not {hf_config.model_type!r}")
    g = geometry(hf_config)
    out: dict[str, torch.Tensor] = {}
    for name, t in fused.items():
        if name.endswith("self_attn.qkv_proj.weight") or name.endswith("self_attn.qkv_proj.bias"):
            prefix, kind = name.rsplit(".qkv_proj.", 1)
            bounds = {"q_proj": (0, g.q_size), "k_proj": (g.q_size, g.q_size + g.kv_size),
                      "v_proj": (g.q_size + g.kv_size, g.q_size + 2 * g.kv_size)}
            if t.shape[0] != g.q_size + 2 * g.kv_size:
                raise ValueError(f"{name} has {t.shape[0]} rows, expected {g.q_size + 2 * g.kv_size}")
            for proj, (a, b) in bounds.items():
                out[f"{prefix}.{proj}.{kind}"] = t[a:b]
        elif name.endswith("mlp.gate_up_proj.weight"):
            prefix = name[: -len("gate_up_proj.weight")]
            if t.shape[0] != 2 * g.intermediate:
                raise ValueError(f"{name} has {t.shape[0]} rows, expected {2 * g.intermediate}")
            out[prefix + "gate_proj.weight"] = t[: g.intermediate]
            out[prefix + "up_proj.weight"] = t[g.intermediate:]
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            out[name] = t[: g.vocab]  # drop the engine's vocabulary padding
        else:
            out[name] = t
    if getattr(hf_config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def fuse(hf_state: dict[str, torch.Tensor], hf_config, vocab_multiple: int = 64) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_views`: an HF state dict laid out the way the engine serves it.

    Used where no serving engine is at hand (tests, and the torch-only GPU
    benchmark): q/k/v and gate/up are concatenated and the vocabulary padded.
    """
    g = geometry(hf_config)
    pad = -g.vocab % vocab_multiple
    out: dict[str, torch.Tensor] = {}
    for name, t in hf_state.items():
        if ".self_attn.q_proj." in name:
            prefix, kind = name.split(".q_proj.")
            out[f"{prefix}.qkv_proj.{kind}"] = torch.cat(
                [t, hf_state[f"{prefix}.k_proj.{kind}"], hf_state[f"{prefix}.v_proj.{kind}"]])
        elif ".mlp.gate_proj." in name:
            prefix = name.split("gate_proj.")[0]
            out[prefix + "gate_up_proj.weight"] = torch.cat([t, hf_state[prefix + "up_proj.weight"]])
        elif any(f".{p}." in name for p in ("k_proj", "v_proj", "up_proj")):
            continue
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            out[name] = torch.cat([t, t.new_zeros(pad, t.shape[1])])
        else:
            out[name] = t.clone()
    return out


def build_model(hf_config, fused: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An HF causal LM (on the tensors' device) whose parameters are views of ``fused``.

    The skeleton is created on the meta device, so no weight memory is ever
    allocated; each parameter is then bound to its view. Missing or unexpected
    names are errors: a silently random-initialised weight would train garbage.
    """
    from transformers import AutoModelForCausalLM

    views = hf_views(fused, hf_config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa",
                                                 dtype=next(iter(views.values())).dtype)
    expected = {n for n, _ in model.named_parameters()}
    missing, unexpected = expected - views.keys(), views.keys() - expected
    if missing or unexpected:
        raise ValueError(f"weight names do not match the HF model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    for name, view in views.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        setattr(module, attr, torch.nn.Parameter(view, requires_grad=False))
    if getattr(hf_config, "tie_word_embeddings", False):
        model.tie_weights()
    # Buffers (rotary inverse frequencies) were created on meta: rebuild that module for real.
    device = next(iter(views.values())).device
    rotary = model.get_submodule("model.rotary_emb")
    with torch.device(device):
        model.model.rotary_emb = type(rotary)(config=hf_config)
    model.eval()  # no dropout in the frozen base; PEFT's LoRA dropout is configured per job
    return model


def private_bytes(model: torch.nn.Module) -> int | None:
    """Bytes of base (frozen) parameters NOT backed by shared memory; None off CPU.

    Zero means the model holds no private copy of the serving weights. A CUDA
    tensor opened from an IPC handle and a private device copy cannot be told
    apart from here, so a model with any frozen parameter off the CPU answers
    None (unknown), never 0.
    """
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        if p.device.type != "cpu":
            return None
        if not p.untyped_storage().is_shared():
            total += p.numel() * p.element_size()
    return total


def shm_segments(tensors, maps_path: str = "/proc/self/maps") -> dict[str, int]:
    """Which shared-memory segment holds each CPU tensor's storage: ``{"dev:inode": bytes}``.

    Each distinct storage is found by its address in this process's memory map and
    counted once, under the device and inode of the shared-memory file mapped there
    (``/dev/shm`` or memfd, deleted or not); a storage in no such mapping counts
    under ``"private"``. Inodes name the segment whatever address each process maps
    it at, so the worker's answer for its frozen parameters and the scheduler's for
    its serving weights can be compared: the same keys mean the very same memory.
    """
    maps = []
    with open(maps_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ("/dev/shm/" in parts[5] or parts[5].startswith("/memfd:")):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                maps.append((lo, hi, f"{parts[3]}:{parts[4]}"))
    out: dict[str, int] = {}
    seen: set[int] = set()
    for t in tensors:
        if t.device.type != "cpu":
            continue
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        key = next((k for lo, hi, k in maps if lo <= ptr < hi), "private")
        out[key] = out.get(key, 0) + storage.nbytes()
    return out
