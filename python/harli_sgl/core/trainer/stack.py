"""An HF decoder-only causal LM opened up into separately callable pieces.

``LlamaForCausalLM.forward`` (and Qwen2's) runs embed -> decoder layers -> final
norm -> lm_head -> loss in one call. The chunked trainer needs each of those as
its own call, with tensors handed across the boundaries by the caller, and with
*exactly* the arguments HF's own forward would pass, so that the pieces compose
to the same function. This module is the only place that knows transformers'
internals (module paths, ``create_causal_mask``, the rotary embedding, the
decoder-layer keyword arguments, as of transformers 5.19); when a new version
changes ``LlamaModel.forward``, this is the file to re-read it against.

Training runs without a KV cache (``past_key_values=None, use_cache=False``):
HF's training forward builds a ``DynamicCache`` only because ``use_cache``
defaults to the config's value, and the cache never changes the outputs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from harli_sgl.core.trainer.data import IGNORE_INDEX

# Families whose ``*Model.forward`` this module has been checked against.
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


class LayerContext(NamedTuple):
    """What every decoder layer of one micro-batch shares; computed once, without grad."""

    masks: dict[str, Any]
    position_ids: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor]


class DecoderStack:
    """Embedding, decoder layers and LM head of a PEFT-wrapped causal LM, one call each.

    Args:
        peft_model: a ``PeftModel`` (LoRA) around an HF ``*ForCausalLM`` of a
            supported family. Modules are referenced, never copied.
    """

    def __init__(self, peft_model: nn.Module) -> None:
        causal_lm = peft_model.get_base_model()
        config = causal_lm.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise TypeError(f"model_type {config.model_type!r} is not supported by the chunked "
                            f"trainer; supported: {SUPPORTED_MODEL_TYPES}")
        inner = causal_lm.model
        self.causal_lm = causal_lm
        self.config = config
        self.embed_tokens: nn.Module = inner.embed_tokens
        self.layers: nn.ModuleList = inner.layers[: config.num_hidden_layers]
        self.norm: nn.Module = inner.norm
        self.rotary_emb: nn.Module = inner.rotary_emb
        self.lm_head: nn.Module = causal_lm.lm_head
        # Layer i attends with masks[layer_types[i]]; Llama has no layer_types (all full).
        self.layer_types: list[str] = list(getattr(config, "layer_types", None)
                                           or ["full_attention"] * len(self.layers))
        # A frozen embedding needs no backward, so layer 0's input needs no grad either.
        self.embed_trainable = any(p.requires_grad for p in self.embed_tokens.parameters())

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    @torch.no_grad()
    def context(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> LayerContext:
        """Masks and rotary embeddings for one micro-batch, as ``*Model.forward`` builds them."""
        position_ids = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)
        mask_kwargs = dict(config=self.config, inputs_embeds=embeds, attention_mask=attention_mask,
                           past_key_values=None, position_ids=position_ids)
        masks: dict[str, Any] = {}
        for kind in set(self.layer_types):
            build = create_sliding_window_causal_mask if kind == "sliding_attention" \
                else create_causal_mask
            masks[kind] = build(**mask_kwargs)
        position_embeddings = self.rotary_emb(embeds, position_ids=position_ids)
        return LayerContext(masks, position_ids, position_embeddings)

    def layer(self, index: int, hidden: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self.layers[index](
            hidden,
            attention_mask=ctx.masks[self.layer_types[index]],
            position_embeddings=ctx.position_embeddings,
            position_ids=ctx.position_ids,
            past_key_values=None,
            use_cache=False,
        )

    def head_loss(self, hidden: torch.Tensor, labels: torch.Tensor,
                  num_items_in_batch: int) -> HeadOut:
        """Final norm, lm_head, the summed token loss divided by ``num_items_in_batch``, and
        how many supervised tokens the model predicts exactly (its argmax).

        The loss is HF's own loss function (``ForCausalLMLoss``: fp32 upcast, shift,
        ``reduction="sum"`` then division) with the step's supervised-token count,
        which is how gradient accumulation reproduces the full-batch mean loss. The
        hits are counted under the same shift, without a graph; hits over supervised
        tokens is OpenAI's mean token accuracy.
        """
        logits = self.lm_head(self.norm(hidden))
        loss = self.causal_lm.loss_function(logits=logits, labels=labels,
                                            vocab_size=self.config.vocab_size,
                                            num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            target = labels[:, 1:].to(logits.device)
            hits = ((logits[:, :-1].argmax(-1) == target) & (target != IGNORE_INDEX)).sum()
        return HeadOut(loss, int(hits))


class HeadOut(NamedTuple):
    loss: torch.Tensor  # with its graph when the head ran under autograd
    hits: int  # supervised tokens whose argmax prediction is the label
