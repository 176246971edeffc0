"""The frontend's chat template renders what the model's own chat template renders."""

from transformers import AutoTokenizer

from harli_sgl.model import default_model

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima"}]


def test_the_registered_template_renders_like_the_tokenizer():
    from sglang.lang.chat_template import get_chat_template_by_model_path

    import harli_sgl.frontend as F

    path = default_model.ensure()
    template = get_chat_template_by_model_path(path)
    assert template.name == F.TEMPLATE_NAME
    assert get_chat_template_by_model_path("meta-llama/Llama-3-8B").name != F.TEMPLATE_NAME
    rendered = "".join(template.get_prefix_and_suffix(m["role"], [])[0] + m["content"]
                       + template.get_prefix_and_suffix(m["role"], [])[1] for m in MESSAGES)
    tok = AutoTokenizer.from_pretrained(path)
    assert rendered == tok.apply_chat_template(MESSAGES, tokenize=False)
    # A generation starts where the tokenizer's generation prompt ends.
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(template.get_prefix_and_suffix("assistant", [])[0])
