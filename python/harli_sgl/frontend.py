"""The embedded model's chat template, for SGLang's frontend language.

``sgl.RuntimeEndpoint`` picks a chat template on the *client*, from the served
model's path, in SGLang's registry (``sglang.lang.chat_template``). No entry
matches the embedded default model, so it fell back to ``"default"``
(``USER:``/``ASSISTANT:``), and an ``sgl.user``/``sgl.assistant`` program
rendered differently from ``/v1/chat/completions`` and from the training data.
Importing this module registers the model's own template, ``"harli-default"``
(``<|role|>content</s>`` per message, the same text the tokenizer's chat
template renders), and a matching function for the embedded models' paths.
The registry lives in the client process, so the client imports it::

    import harli_sgl.frontend  # noqa: F401  (registers the template)
    backend = sgl.RuntimeEndpoint(url)  # or chat_template_name="harli-default"
"""

from __future__ import annotations

import os

from sglang.lang.chat_template import (ChatTemplate, register_chat_template,
                                       register_chat_template_matching_function)

from harli_sgl.model.default_model import SPECS

TEMPLATE_NAME = "harli-default"

TEMPLATE = ChatTemplate(
    name=TEMPLATE_NAME,
    default_system_prompt=None,
    role_prefix_and_suffix={role: (f"<|{role}|>", "</s>")
                            for role in ("system", "user", "assistant")},
    stop_str=("</s>",),
)


def match(model_path: str) -> str | None:
    """The template for a path (or served name) of one of the embedded models."""
    name = os.path.basename(os.path.normpath(model_path))
    return TEMPLATE_NAME if any(name.startswith(s.name) for s in SPECS.values()) else None


register_chat_template(TEMPLATE)
register_chat_template_matching_function(match)
