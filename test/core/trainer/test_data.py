from __future__ import annotations

import json

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from harli_sgl.core.trainer.data import (
    IGNORE_INDEX, DataError, DataPosition, Example, collate, encode_record, epoch_order,
    load_examples, parse_jsonl, validate_record)
from harli_sgl.model.byte_model import build_tokenizer


def supervised_spans(tokenizer, example: Example) -> list[str]:
    """Decoded text of each contiguous run of supervised tokens."""
    spans, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label == IGNORE_INDEX:
            if current:
                spans.append(current)
            current = []
        else:
            assert label == token
            current.append(label)
    if current:
        spans.append(current)
    return [tokenizer.decode(s) for s in spans]


def test_chat_supervises_every_assistant_turn_and_its_eos(tokenizer):
    record = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi?"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye?"},
        {"role": "assistant", "content": "ciao"},
    ]}
    example = encode_record(tokenizer, record, max_seq_len=512)
    assert tokenizer.decode(example.input_ids) == (
        "<|system|>be brief</s><|user|>hi?</s><|assistant|>hello</s><|user|>bye?</s>"
        "<|assistant|>ciao</s>")
    assert supervised_spans(tokenizer, example) == ["hello</s>", "ciao</s>"]


def test_chat_starting_with_assistant(tokenizer):
    record = {"messages": [{"role": "assistant", "content": "first"},
                           {"role": "user", "content": "then"},
                           {"role": "assistant", "content": "second"}]}
    example = encode_record(tokenizer, record, max_seq_len=512)
    assert supervised_spans(tokenizer, example) == ["first</s>", "second</s>"]
    assert example.labels[0] == IGNORE_INDEX  # the role marker is prompt, not target


def test_chat_ending_with_a_user_turn(tokenizer):
    record = {"messages": [{"role": "user", "content": "q"},
                           {"role": "assistant", "content": "first"},
                           {"role": "user", "content": "then"}]}
    example = encode_record(tokenizer, record, max_seq_len=512)
    # The role marker that precedes the answer is prompt, not target.
    assert supervised_spans(tokenizer, example) == ["first</s>"]
    assert tokenizer.decode(example.input_ids).endswith("<|user|>then</s>")


def test_prompt_completion_supervises_completion_and_eos(tokenizer):
    example = encode_record(tokenizer, {"prompt": "2+2=", "completion": "4"}, max_seq_len=512)
    assert tokenizer.decode(example.input_ids) == "2+2=4</s>"
    assert supervised_spans(tokenizer, example) == ["4</s>"]
    assert example.supervised_tokens == 2


def test_prompt_completion_with_a_bos_adding_tokenizer():
    tok = build_tokenizer()
    # A Llama-style post-processor that adds BOS and EOS around any encoding.
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    example = encode_record(tok, {"prompt": "ab", "completion": "c"}, max_seq_len=512)
    assert tok.decode(example.input_ids) == "<s>abc</s>"
    assert supervised_spans(tok, example) == ["c</s>"]


def test_truncation_keeps_the_start_and_requires_a_supervised_token(tokenizer):
    record = {"prompt": "abcd", "completion": "efgh"}
    example = encode_record(tokenizer, record, max_seq_len=6)
    assert tokenizer.decode(example.input_ids) == "abcdef"
    assert supervised_spans(tokenizer, example) == ["ef"]
    with pytest.raises(DataError, match=r"^line 4: no supervised token .*max_seq_len=4"):
        encode_record(tokenizer, record, max_seq_len=4, line_no=4)


def test_template_that_is_not_prefix_stable_is_rejected():
    tok = build_tokenizer()
    # Drops the content of all but the last message, like templates that strip
    # earlier reasoning: rendered prefixes are not prefixes of the whole.
    tok.chat_template = (
        "{%- for m in messages -%}<|{{ m['role'] }}|>{%- if loop.last -%}{{ m['content'] }}"
        "{%- endif -%}</s>{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}")
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                           {"role": "user", "content": "r"}]}
    with pytest.raises(DataError, match=r"^line 9: the chat template is not prefix-stable.*"
                                        r"messages\[1\]"):
        encode_record(tok, record, max_seq_len=512, line_no=9)


def test_template_errors_name_the_line():
    tok = build_tokenizer()
    tok.chat_template = "{{ raise_exception('system messages are not supported') }}"
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with pytest.raises(DataError, match=r"^line 2: the chat template rejected.*not supported"):
        encode_record(tok, record, max_seq_len=512, line_no=2)


@pytest.mark.parametrize("obj, error", [
    ([1, 2], "expected a JSON object, got array"),
    ("text", "expected a JSON object, got string"),
    (None, "expected a JSON object, got null"),
    ({"text": "x"}, "neither 'messages' nor 'prompt'/'completion'"),
    ({"messages": "hi"}, "'messages' must be a list, got string"),
    ({"messages": []}, "'messages' is empty"),
    ({"messages": ["hi"]}, r"messages\[0\] must be an object, got string"),
    ({"messages": [{"role": "tool", "content": "x"}]}, r"messages\[0\] has unknown role 'tool'"),
    ({"messages": [{"content": "x"}]}, r"messages\[0\] has unknown role None"),
    ({"messages": [{"role": "assistant", "content": 3}]},
     r"messages\[0\]\.content must be a string, got number"),
    ({"messages": [{"role": "assistant"}]},
     r"messages\[0\]\.content must be a string, got nothing"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant message"),
    ({"messages": [], "prompt": "x", "completion": "y"}, "mixes the chat format"),
    ({"prompt": "x"}, "missing 'completion'"),
    ({"completion": "x"}, "missing 'prompt'"),
    ({"prompt": 1, "completion": "x"}, "'prompt' must be a string, got number"),
    ({"prompt": "x", "completion": None}, "'completion' must be a string, got null"),
    ({"prompt": "x", "completion": True}, "'completion' must be a string, got boolean"),
    ({"prompt": "x", "completion": ""}, "'completion' is empty"),
])
def test_validate_record_names_the_line(obj, error):
    with pytest.raises(DataError, match=rf"^line 7: .*{error}"):
        validate_record(obj, 7)


def test_valid_records_pass():
    validate_record({"prompt": "", "completion": "x"}, 1)
    validate_record({"messages": [{"role": "system", "content": ""},
                                  {"role": "assistant", "content": ""}]}, 1)


def test_parse_jsonl_skips_blank_lines_but_counts_them():
    text = "\ufeff" + json.dumps({"prompt": "a", "completion": "b"}) + "\n\n  \n" + \
        json.dumps({"messages": [{"role": "user", "content": "c"},
                                 {"role": "assistant", "content": "d"}]}) + "\n"
    assert [sorted(r) for r in parse_jsonl(text)] == [["completion", "prompt"], ["messages"]]
    # Lines 5 (blank) and 6 ([]) come after the 4 lines of ``text``.
    with pytest.raises(DataError, match=r"^line 6: expected a JSON object"):
        parse_jsonl(text + "\n[]\n")


@pytest.mark.parametrize("text, error", [
    ('{"prompt": "a", "completion": "b"}\n{"prompt": \n', r"^line 2: malformed JSON"),
    ("\n\n{oops}\n", r"^line 3: malformed JSON: .* \(column 2\)"),
    # U+2028 is legal inside a JSON string; only "\n" ends a line.
    ('{"prompt": "a\u2028b", "completion": "c"}\n{', r"^line 2: malformed JSON"),
    ("", r"^line 1: the file is empty"),
    ("\n  \n", r"^line 1: the file is empty"),
    ("[" * 100_000, r"^line 1: malformed JSON"),
])
def test_parse_jsonl_errors(text, error):
    with pytest.raises(DataError, match=error):
        parse_jsonl(text)


def test_load_examples_names_the_line_of_an_encoding_failure(tokenizer):
    text = "\n".join(json.dumps(r) for r in [
        {"prompt": "a", "completion": "b"},
        {"prompt": "a" * 50, "completion": "b"},
    ])
    assert len(load_examples(text, tokenizer, max_seq_len=100)) == 2
    with pytest.raises(DataError, match=r"^line 2: no supervised token"):
        load_examples(text, tokenizer, max_seq_len=10)


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    first = epoch_order(50, seed=3, epoch=0)
    assert sorted(first) == list(range(50))
    assert first == epoch_order(50, seed=3, epoch=0)
    assert first != epoch_order(50, seed=3, epoch=1)
    assert first != epoch_order(50, seed=4, epoch=0)
    assert epoch_order(0, seed=3, epoch=0) == []


def test_data_position_is_frozen():
    position = DataPosition(epoch=1, step=2)
    with pytest.raises(AttributeError):
        position.step = 3  # type: ignore[misc]


def test_collate_right_pads():
    batch = collate([Example([5, 6, 7], [-100, 6, 7]), Example([8], [8])], pad_id=1)
    assert batch.input_ids.dtype == batch.labels.dtype == batch.attention_mask.dtype == torch.long
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError):
        collate([], pad_id=1)
