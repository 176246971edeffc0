"""Preference records: OpenAI's DPO format, encoded as two answers to one prompt."""

from __future__ import annotations

import json

import pytest

from harli_sgl.core.trainer.data import IGNORE_INDEX, DataError
from harli_sgl.core.trainer.preference import (collate_pairs, encode_preference_record,
                                               load_preference_examples,
                                               validate_preference_record)

RECORD = {"input": {"messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "capital of France?"}]},
          "preferred_output": [{"role": "assistant", "content": "Paris"}],
          "non_preferred_output": [{"role": "assistant", "content": "Lyon, I think"}]}


def supervised_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels)
                             if label != IGNORE_INDEX])


def test_each_answer_is_supervised_after_the_shared_prompt(tokenizer):
    pair = encode_preference_record(tokenizer, RECORD, max_seq_len=512)
    assert supervised_text(tokenizer, pair.preferred).startswith("Paris")
    assert supervised_text(tokenizer, pair.non_preferred).startswith("Lyon, I think")
    prompt = tokenizer.apply_chat_template(RECORD["input"]["messages"], tokenize=True,
                                           return_dict=False, add_generation_prompt=True)
    for example in pair:
        assert example.input_ids[:len(prompt)] == list(prompt)
        assert set(example.labels[:len(prompt)]) == {IGNORE_INDEX}
        assert example.labels[len(prompt):] == example.input_ids[len(prompt):]


def test_collate_puts_preferred_rows_first(tokenizer):
    pairs = load_preference_examples("\n".join([json.dumps(RECORD)] * 2) + "\n", tokenizer, 512)
    mb = collate_pairs(pairs, pad_id=0)
    assert mb.input_ids.shape[0] == 4
    width = len(pairs[0].preferred.input_ids)
    assert mb.input_ids[0, :width].tolist() == pairs[0].preferred.input_ids
    assert mb.input_ids[2, :len(pairs[0].non_preferred.input_ids)].tolist() == \
        pairs[0].non_preferred.input_ids


def test_an_answer_cut_off_by_max_seq_len_names_its_line(tokenizer):
    text = json.dumps(RECORD) + "\n\n" + json.dumps(RECORD)
    with pytest.raises(DataError, match=r"^line 1: no token of preferred_output is left"):
        load_preference_examples(text, tokenizer, max_seq_len=5)


def with_(path: str, value) -> dict:
    record = json.loads(json.dumps(RECORD))
    *parents, last = path.split(".")
    node = record
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return record


@pytest.mark.parametrize("record, problem", [
    ([RECORD], "expected a JSON object, got array"),
    (with_("input", KeyError), "preference record is missing 'input'"),
    (with_("non_preferred_output", KeyError), "preference record is missing 'non_preferred_output'"),
    (with_("rejected", "x"), "preference record has unknown field 'rejected'"),
    (with_("input", "hi"), "'input' must be an object, got string"),
    (with_("input.messages", KeyError), "input is missing 'messages'"),
    (with_("input.tool_choice", "auto"), "input has unknown field 'tool_choice'; expected"),
    (with_("input.tools", [{"type": "function"}]), "input.tools is not supported"),
    (with_("input.messages", []), "'input.messages' is empty"),
    (with_("input.messages.1.role", "robot"), "input.messages[1] has unknown role 'robot'"),
    (with_("input.messages.0.content", 7), "input.messages[0].content must be a string, got number"),
    (with_("preferred_output", {"role": "assistant", "content": "x"}),
     "'preferred_output' must be a list of exactly one assistant message, got object"),
    (with_("preferred_output", []), "'preferred_output' must be a list of exactly one assistant "
                                    "message, got 0 messages"),
    (with_("preferred_output.0", "Paris"), "preferred_output[0] must be an object, got string"),
    (with_("non_preferred_output.0.role", "user"),
     "non_preferred_output[0].role must be 'assistant', got 'user'"),
    (with_("non_preferred_output.0.content", None),
     "non_preferred_output[0].content must be a string, got null"),
    (with_("preferred_output.0.content", ""), "preferred_output[0].content is empty"),
    (with_("non_preferred_output.0.content", "Paris"),
     "preferred_output and non_preferred_output are identical"),
])
def test_bad_records_name_the_line_and_field(record, problem):
    with pytest.raises(DataError) as err:
        validate_preference_record(record, 7)
    assert str(err.value).startswith(f"line 7: {problem}")
    assert err.value.line == 7


def test_input_may_carry_empty_tools_and_parallel_tool_calls():
    validate_preference_record(with_("input.tools", []), 1)
    validate_preference_record(with_("input.parallel_tool_calls", True), 1)
