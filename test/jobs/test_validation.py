"""Upload-time JSONL validation: both record formats pass, every failure names its 1-based line."""

from __future__ import annotations

import json

import pytest

from harli_sgl.jobs.validation import (FileCheck, JsonlError, check_training_jsonl,
                                      validate_training_jsonl)

CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}]}
COMPLETION = {"prompt": "2+2=", "completion": "4"}


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_both_formats_pass_and_records_are_counted():
    assert validate_training_jsonl(jsonl(CHAT, COMPLETION, CHAT)) == 3


def test_blank_lines_crlf_bom_and_no_final_newline_are_fine():
    data = b"\xef\xbb\xbf" + json.dumps(CHAT).encode() + b"\r\n\n   \n" + json.dumps(COMPLETION).encode()
    assert validate_training_jsonl(data) == 2


def test_unicode_content_passes():
    assert validate_training_jsonl(jsonl({"prompt": "caf\u00e9 \u2028", "completion": "\u65e5\u672c"})) == 1


@pytest.mark.parametrize("data, line, fragment", [
    (b"", 1, "no records"),
    (b"\n \n\n", 1, "no records"),
    (jsonl(CHAT) + b'{"prompt": "a", "completion": \n', 2, "malformed JSON"),
    (jsonl(CHAT, CHAT) + b"not json\n", 3, "malformed JSON"),
    (jsonl(CHAT) + b"\n" + b'{"prompt": "\xff\xfe", "completion": "x"}\n', 3, "not valid UTF-8"),
    (jsonl(CHAT, [1, 2]), 2, "expected a JSON object, got array"),
    (jsonl(CHAT, "text"), 2, "got string"),
    (jsonl({"text": "hello"}), 1, "neither 'messages' nor 'prompt'/'completion'"),
    (jsonl({"messages": []}), 1, "'messages' is empty"),
    (jsonl({"messages": {"role": "user"}}), 1, "'messages' must be a list"),
    (jsonl({"messages": [{"role": "user", "content": "hi"}]}), 1, "no assistant message"),
    (jsonl({"messages": [{"role": "robot", "content": "hi"}]}), 1, "unknown role 'robot'"),
    (jsonl({"messages": [{"role": "assistant", "content": None}]}), 1, "content must be a string"),
    (jsonl({"messages": [{"role": "assistant"}]}), 1, "got nothing"),
    (jsonl({"messages": ["hi"]}), 1, "messages[0] must be an object"),
    (jsonl(COMPLETION, {"prompt": "a"}), 2, "missing 'completion'"),
    (jsonl({"completion": "a"}), 1, "missing 'prompt'"),
    (jsonl({"prompt": 1, "completion": "a"}), 1, "'prompt' must be a string, got number"),
    (jsonl({"prompt": "a", "completion": ""}), 1, "'completion' is empty"),
    (jsonl({**CHAT, **COMPLETION}), 1, "mixes the chat format"),
    (b"[" * 100_000 + b"\n", 1, "malformed JSON"),
])
def test_failures_name_the_line(data, line, fragment):
    with pytest.raises(JsonlError) as err:
        validate_training_jsonl(data)
    assert err.value.line == line
    assert str(err.value).startswith(f"line {line}: ")
    assert fragment in str(err.value)


PREFERENCE = {"input": {"messages": [{"role": "user", "content": "2+2?"}]},
              "preferred_output": [{"role": "assistant", "content": "4"}],
              "non_preferred_output": [{"role": "assistant", "content": "5"}]}


def test_a_preference_file_is_checked_as_dpo_data():
    assert check_training_jsonl(jsonl(PREFERENCE, PREFERENCE)) == FileCheck(2, "dpo")
    assert check_training_jsonl(jsonl(CHAT, COMPLETION)) == FileCheck(2, "supervised")


@pytest.mark.parametrize("data, line, fragment", [
    (jsonl(PREFERENCE, CHAT), 2, "a supervised record in a file of preference (DPO) records"),
    (jsonl(COMPLETION, PREFERENCE), 2, "a preference (DPO) record in a file of supervised records"),
    (jsonl(PREFERENCE, {**PREFERENCE, "preferred_output": "4"}), 2,
     "'preferred_output' must be a list of exactly one assistant message, got string"),
    (jsonl(PREFERENCE, PREFERENCE, {"input": PREFERENCE["input"],
                                    "preferred_output": PREFERENCE["preferred_output"]}), 3,
     "preference record is missing 'non_preferred_output'"),
    (jsonl({**PREFERENCE, "input": {"messages": [{"role": "user"}]}}), 1,
     "input.messages[0].content must be a string, got nothing"),
])
def test_preference_failures_name_the_line_and_field(data, line, fragment):
    with pytest.raises(JsonlError) as err:
        check_training_jsonl(data)
    assert err.value.line == line
    assert str(err.value).startswith(f"line {line}: {fragment}")
