"""Preference records (OpenAI's DPO JSONL) -> pairs of token ids with loss masks.

A preference file is JSONL, one record per line, in OpenAI's format::

    {"input": {"messages": [{"role": "user", "content": "..."}, ...]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

``input.messages`` is a conversation (roles system/user/assistant, string
contents) that the outputs answer; each output is a list of exactly one
assistant message with non-empty string content, and the two must differ.
``input`` may carry OpenAI's ``tools`` (only empty: tools are not supported)
and ``parallel_tool_calls`` (ignored); any other key is refused, so a typo is
not silently dropped.

Each answer is encoded like a supervised chat record whose only supervised
turn is that answer: the prompt is the conversation rendered with the
generation prompt, the answer owns the tokens rendering it adds (its content
and whatever the template closes it with). The template must be prefix-stable,
as for supervised data. The two sequences of a pair are truncated to
``max_seq_len`` each and must each keep a supervised token.

The rules and words are shared with the upload-time check
(``harli_sgl/jobs/validation.py``), so a file accepted at upload is not
rejected later on shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from harli_sgl.core.trainer.data import (IGNORE_INDEX, DataError, Example, MicroBatch, _kind,
                                         _numbered_lines, _record_error, _render, _validate_chat,
                                         _where, collate)

PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
OUTPUT_KEYS = ("preferred_output", "non_preferred_output")
INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")


class PreferenceExample(NamedTuple):
    preferred: Example
    non_preferred: Example


def is_preference_record(obj: Any) -> bool:
    """True if ``obj`` is meant as a preference record (it has any of the DPO keys)."""
    return isinstance(obj, dict) and any(key in obj for key in PREFERENCE_KEYS)


def validate_preference_record(obj: Any, line_no: int | None) -> None:
    """Raise :class:`DataError` naming the line and field if ``obj`` is no usable preference."""
    if not isinstance(obj, dict):
        raise _record_error(line_no, f"expected a JSON object, got {_kind(obj)}")
    for key in PREFERENCE_KEYS:
        if key not in obj:
            raise _record_error(line_no, f"preference record is missing '{key}'")
    extra = [key for key in obj if key not in PREFERENCE_KEYS]
    if extra:
        raise _record_error(line_no, f"preference record has unknown field '{extra[0]}'; "
                                     f"expected {list(PREFERENCE_KEYS)}")
    given = obj["input"]
    if not isinstance(given, dict):
        raise _record_error(line_no, f"'input' must be an object, got {_kind(given)}")
    extra = [key for key in given if key not in INPUT_KEYS]
    if extra:
        raise _record_error(line_no, f"input has unknown field '{extra[0]}'; "
                                     f"expected {list(INPUT_KEYS)}")
    if given.get("tools"):
        raise _record_error(line_no, "input.tools is not supported (give no tools or [])")
    if "messages" not in given:
        raise _record_error(line_no, "input is missing 'messages'")
    _validate_chat(given["messages"], line_no, field="input.messages", need_assistant=False)
    contents = []
    for key in OUTPUT_KEYS:
        contents.append(_validate_output(obj[key], key, line_no))
    if contents[0] == contents[1]:
        raise _record_error(line_no, "preferred_output and non_preferred_output are identical")


def _validate_output(output: Any, key: str, line_no: int | None) -> str:
    if not isinstance(output, list) or len(output) != 1:
        got = f"{len(output)} messages" if isinstance(output, list) else _kind(output)
        raise _record_error(line_no, f"'{key}' must be a list of exactly one assistant "
                                     f"message, got {got}")
    message = output[0]
    if not isinstance(message, dict):
        raise _record_error(line_no, f"{key}[0] must be an object, got {_kind(message)}")
    if message.get("role") != "assistant":
        raise _record_error(line_no, f"{key}[0].role must be 'assistant', "
                                     f"got {message.get('role')!r}")
    content = message.get("content")
    if not isinstance(content, str):
        got = _kind(content) if "content" in message else "nothing"
        raise _record_error(line_no, f"{key}[0].content must be a string, got {got}")
    if not content:
        raise _record_error(line_no, f"{key}[0].content is empty")
    return content


def encode_preference_record(tokenizer: Any, record: dict, max_seq_len: int, *,
                             line_no: int | None = None) -> PreferenceExample:
    """Tokenize one validated preference record into its two supervised sequences."""
    messages = record["input"]["messages"]
    prompt = _render(tokenizer, messages, True, line_no)
    encoded = []
    for key in OUTPUT_KEYS:
        full = _render(tokenizer, messages + record[key], False, line_no)
        if full[: len(prompt)] != prompt or len(full) <= len(prompt):
            raise DataError(f"{_where(line_no)}the chat template is not prefix-stable: the "
                            f"prompt is not a token prefix of the conversation with {key}, so "
                            "the answer cannot be located")
        example = Example(full[:max_seq_len],
                          ([IGNORE_INDEX] * len(prompt) + full[len(prompt):])[:max_seq_len])
        if example.supervised_tokens == 0:
            raise DataError(f"{_where(line_no)}no token of {key} is left within max_seq_len="
                            f"{max_seq_len} (the prompt has {len(prompt)} tokens)")
        encoded.append(example)
    return PreferenceExample(*encoded)


def load_preference_examples(text: str, tokenizer: Any,
                             max_seq_len: int) -> list[PreferenceExample]:
    """Parse, validate and encode a whole preference JSONL file, naming the line of any failure."""
    out = []
    for line_no, obj in _numbered_lines(text):
        validate_preference_record(obj, line_no)
        out.append(encode_preference_record(tokenizer, obj, max_seq_len, line_no=line_no))
    if not out:
        raise DataError("line 1: the file is empty; expected one JSON record per line")
    return out


def collate_pairs(pairs: Sequence[PreferenceExample], pad_id: int) -> MicroBatch:
    """One micro-batch of ``2k`` rows: the ``k`` preferred sequences, then the non-preferred."""
    return collate([p.preferred for p in pairs] + [p.non_preferred for p in pairs], pad_id)

