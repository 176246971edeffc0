"""The embedded models' chat templates, for SGLang's frontend language.

``sgl.RuntimeEndpoint`` picks a chat template on the *client*, from the served
model's path, in SGLang's registry (``sglang.lang.chat_template``). No entry
matches the embedded models, so it fell back to ``"default"``
(``USER:``/``ASSISTANT:``), and an ``sgl.user``/``sgl.assistant`` program
rendered differently from ``/v1/chat/completions`` and from the training data.
Importing this module registers the models' own templates, the same text their
tokenizers' chat templates render, and a matching function for their paths and
served names:

- ``"smollm2"`` for SmolLM2-135M-Instruct, the default model: ChatML
  (``<|im_start|>role\\ncontent<|im_end|>\\n``) with SmolLM2's default system
  prompt, which its tokenizer inserts when a conversation has none;
- ``"byte-llama"`` for the random byte-level test models: ``<|role|>content</s>``.

The registry lives in the client process, so the client imports it::

    import harli_sgl.frontend  # noqa: F401  (registers the templates)
    backend = sgl.RuntimeEndpoint(url)  # or chat_template_name="smollm2"
"""

from __future__ import annotations

import os

from sglang.lang.chat_template import (ChatTemplate, register_chat_template,
                                       register_chat_template_matching_function)

from harli_sgl.model import byte_model, smollm2

SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SMOLLM2 = ChatTemplate(
    name="smollm2",
    default_system_prompt=SMOLLM2_SYSTEM_PROMPT,
    role_prefix_and_suffix={role: (f"<|im_start|>{role}\n", "<|im_end|>\n")
                            for role in ("system", "user", "assistant")},
    stop_str=("<|im_end|>",),
)

BYTE_LLAMA = ChatTemplate(
    name="byte-llama",
    default_system_prompt=None,
    role_prefix_and_suffix={role: (f"<|{role}|>", "</s>")
                            for role in ("system", "user", "assistant")},
    stop_str=("</s>",),
)


def match(model_path: str) -> str | None:
    """The template for a path (or served name) of one of the embedded models."""
    name = os.path.basename(os.path.normpath(model_path))
    if name.startswith(smollm2.SERVED_NAME):
        return SMOLLM2.name
    if any(name.startswith(s.name) for s in byte_model.SPECS.values()):
        return BYTE_LLAMA.name
    return None


register_chat_template(SMOLLM2)
register_chat_template(BYTE_LLAMA)
register_chat_template_matching_function(match)
