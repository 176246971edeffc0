"""The frontend's chat templates render what the models' own chat templates render."""

import pytest
from transformers import AutoTokenizer

from harli_sgl.model import byte_model, smollm2

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima"}]


def render(template, messages) -> str:
    """What ``sgl.system/user/assistant`` calls render (the interpreter's rules)."""
    out = ""
    if messages[0]["role"] != "system" and template.default_system_prompt:
        prefix, suffix = template.get_prefix_and_suffix("system", [])
        out += prefix + template.default_system_prompt + suffix
    for i, m in enumerate(messages):
        prefix, suffix = template.get_prefix_and_suffix(m["role"], messages[:i])
        out += prefix + m["content"] + suffix
    return out


@pytest.mark.parametrize("model", ["smollm2", "byte"])
def test_the_registered_template_renders_like_the_tokenizer(model, smollm2_dir):
    from sglang.lang.chat_template import get_chat_template_by_model_path

    import harli_sgl.frontend as F

    path, expected = ((smollm2_dir, F.SMOLLM2) if model == "smollm2"
                      else (byte_model.ensure(), F.BYTE_LLAMA))
    template = get_chat_template_by_model_path(path)
    assert template.name == expected.name
    served = smollm2.SERVED_NAME if model == "smollm2" else byte_model.SPECS["small"].name
    assert get_chat_template_by_model_path(served).name == expected.name
    assert get_chat_template_by_model_path("meta-llama/Llama-3-8B").name not in (
        F.SMOLLM2.name, F.BYTE_LLAMA.name)
    tok = AutoTokenizer.from_pretrained(path)
    for messages in (MESSAGES, MESSAGES[1:]):  # with and without a system message
        assert render(template, messages) == tok.apply_chat_template(messages, tokenize=False)
    # A generation starts where the tokenizer's generation prompt ends.
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(template.get_prefix_and_suffix("assistant", [])[0])
