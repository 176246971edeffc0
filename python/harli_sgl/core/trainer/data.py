"""Training records -> token ids with a loss mask, and the order they are trained in.

A fine-tuning file is JSONL, one record per line, in one of two formats:

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``,
  rendered with the tokenizer's own chat template;
* prompt/completion: ``{"prompt": str, "completion": str}``, encoded as
  ``[bos if the tokenizer adds one] + prompt + completion + eos``.

Loss is taken only on what the model should learn to produce: every assistant
turn (its content and whatever the template closes it with, typically EOS), or
the completion plus EOS. Labels elsewhere are ``IGNORE_INDEX``. Assistant spans
are found without parsing the template: the conversation is rendered
prefix-by-prefix, and assistant turn ``i`` owns the tokens that rendering
``messages[: i + 1]`` adds to ``messages[:i]`` followed by the generation prompt
(a leading assistant turn has no prefix HF will render, so its start is found
by rendering it around a sentinel string). That only works when the template
is *prefix-stable* (a rendered prefix is a token prefix of the full
rendering); it is checked, and a template that is not (e.g. one that drops
earlier reasoning) is rejected with a precise error rather than silently
mislabelled.

Validation mirrors ``harli_sgl.jobs.validation`` (the upload-time check): the
same rules, JSON type names in messages and lines split on ``"\n"`` only, so
a file accepted at upload is not rejected here on shape.

Order is deterministic: each epoch is a permutation seeded by ``(seed, epoch)``,
so a checkpoint only needs a :class:`DataPosition` to resume at the exact next step.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
_SENTINEL = "HARLI-ASSISTANT-SPAN-7f3a"


class DataError(ValueError):
    """A training file or record is unusable; the message names the offending line.

    Record-shape errors also carry ``line`` (1-based) and ``problem`` apart, so the
    upload-time check (harli_sgl/jobs/validation.py) reports the same words.
    """

    def __init__(self, message: str, line: int | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.problem = problem if problem is not None else message


def _record_error(line_no: int | None, problem: str) -> DataError:
    return DataError(f"{_where(line_no)}{problem}", line_no, problem)


class Example(NamedTuple):
    input_ids: list[int]
    labels: list[int]

    @property
    def supervised_tokens(self) -> int:
        """Tokens that carry loss after the causal shift (token t is predicted from < t)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


class MicroBatch(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class DataPosition:
    """Where the next optimizer step starts: 0-based epoch and 0-based step within it."""

    epoch: int = 0
    step: int = 0


def _kind(value: Any) -> str:
    """JSON's name for a value's type: what the user actually wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _where(line_no: int | None) -> str:
    return f"line {line_no}: " if line_no is not None else ""


def validate_record(obj: Any, line_no: int) -> None:
    """Raise :class:`DataError` naming ``line_no`` (1-based) if ``obj`` is not a usable record."""
    if not isinstance(obj, dict):
        raise _record_error(line_no, f"expected a JSON object, got {_kind(obj)}")
    if "messages" in obj:
        if "prompt" in obj or "completion" in obj:
            raise _record_error(line_no, "mixes the chat format ('messages') with prompt/completion")
        _validate_chat(obj["messages"], line_no)
    elif "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if key not in obj:
                raise _record_error(line_no, f"prompt/completion record is missing '{key}'")
            if not isinstance(obj[key], str):
                raise _record_error(line_no, f"'{key}' must be a string, got {_kind(obj[key])}")
        if not obj["completion"]:
            raise _record_error(line_no, "'completion' is empty")
    else:
        raise _record_error(line_no, "record has neither 'messages' nor 'prompt'/'completion'")


def _validate_chat(messages: Any, line_no: int | None, field: str = "messages",
                   need_assistant: bool = True) -> None:
    if not isinstance(messages, list):
        raise _record_error(line_no, f"'{field}' must be a list, got {_kind(messages)}")
    if not messages:
        raise _record_error(line_no, f"'{field}' is empty")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _record_error(line_no, f"{field}[{i}] must be an object, got {_kind(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise _record_error(line_no, f"{field}[{i}] has unknown role {role!r}; "
                                         f"expected one of {ROLES}")
        if not isinstance(message.get("content"), str):
            got = _kind(message["content"]) if "content" in message else "nothing"
            raise _record_error(line_no, f"{field}[{i}].content must be a string, got {got}")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise _record_error(line_no, "conversation has no assistant message to train on")


def parse_jsonl(text: str) -> list[dict]:
    """Parse and validate a JSONL training file; blank lines are skipped but still counted."""
    return [record for _, record in _numbered_records(text)]


def _numbered_records(text: str) -> list[tuple[int, dict]]:
    records = []
    for line_no, obj in _numbered_lines(text):
        validate_record(obj, line_no)
        records.append((line_no, obj))
    if not records:
        raise DataError("line 1: the file is empty; expected one JSON record per line")
    return records


def _numbered_lines(text: str) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's 1-based number and parsed JSON value (not yet validated)."""
    # Split on "\n" only: str.splitlines() would also split inside JSON strings
    # at U+2028 and friends, which JSON allows unescaped.
    for line_no, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {line_no}: malformed JSON: {exc.msg} "
                            f"(column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"line {line_no}: malformed JSON: {exc}") from None


def encode_record(tokenizer: Any, record: dict, max_seq_len: int, *,
                  line_no: int | None = None) -> Example:
    """Tokenize one validated record, truncate it to ``max_seq_len`` and mask its labels."""
    if "messages" in record:
        ids, labels = _encode_chat(tokenizer, record["messages"], line_no)
    else:
        ids, labels = _encode_completion(tokenizer, record["prompt"], record["completion"])
    example = Example(ids[:max_seq_len], labels[:max_seq_len])
    if example.supervised_tokens == 0:
        raise DataError(f"{_where(line_no)}no supervised token is left within max_seq_len="
                        f"{max_seq_len} (the record has {len(ids)} tokens)")
    return example


def load_examples(text: str, tokenizer: Any, max_seq_len: int) -> list[Example]:
    """Parse, validate and encode a whole JSONL file, naming the line of any failure."""
    return [encode_record(tokenizer, record, max_seq_len, line_no=line_no)
            for line_no, record in _numbered_records(text)]


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool,
            line_no: int | None, tokenize: bool = True) -> Any:
    try:
        out = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=tokenize, return_dict=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raises its own types, e.g. for role-order rules
        raise DataError(f"{_where(line_no)}the chat template rejected the conversation "
                        f"({type(exc).__name__}: {exc})") from None
    return list(out) if tokenize else out


def _assistant_prompt(tokenizer: Any, messages: list[dict], i: int,
                      line_no: int | None) -> list[int]:
    """The tokens a model is given when it starts writing assistant turn ``i``."""
    if i > 0:
        return _render(tokenizer, messages[:i], True, line_no)
    # HF refuses to render an empty conversation, so for a leading assistant
    # turn find where its content starts inside its own rendering instead.
    text = _render(tokenizer, [{"role": "assistant", "content": _SENTINEL}], False, line_no,
                   tokenize=False)
    if _SENTINEL not in text:
        raise DataError(f"{_where(line_no)}the chat template does not render the content of "
                        "a leading assistant message")
    return tokenizer(text[: text.index(_SENTINEL)], add_special_tokens=False)["input_ids"]


def _encode_chat(tokenizer: Any, messages: list[dict],
                 line_no: int | None) -> tuple[list[int], list[int]]:
    full = _render(tokenizer, messages, False, line_no)
    labels = [IGNORE_INDEX] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _assistant_prompt(tokenizer, messages, i, line_no)
        upto = _render(tokenizer, messages[: i + 1], False, line_no)
        for name, prefix in (("the prompt before it", prompt), ("the conversation up to it", upto)):
            if full[: len(prefix)] != prefix:
                raise DataError(
                    f"{_where(line_no)}the chat template is not prefix-stable: rendering {name} "
                    f"(assistant messages[{i}]) is not a token prefix of the whole conversation, "
                    "so the assistant span cannot be located")
        if len(upto) < len(prompt):
            raise DataError(f"{_where(line_no)}the chat template renders assistant messages[{i}] "
                            "shorter than its generation prompt")
        labels[len(prompt): len(upto)] = full[len(prompt): len(upto)]
    return full, labels


def _encode_completion(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token to end completions with")
    head = _bos_prefix(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return head + tail, [IGNORE_INDEX] * len(head) + tail


def _bos_prefix(tokenizer: Any) -> list[int]:
    # Some tokenizers (Llama's) prepend BOS as part of ordinary encoding; respect
    # that without letting a post-processor also append EOS after the prompt.
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The example order of ``epoch``: a permutation that depends only on (seed, epoch).

    Seeded through SHA-256 and Python's ``random`` (whose shuffle is stable across
    versions) rather than torch, so a resumed job sees the same order on any build.
    """
    digest = hashlib.sha256(f"harli-epoch-order/{seed}/{epoch}".encode()).digest()
    order = list(range(n_examples))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def collate(examples: Sequence[Example], pad_id: int) -> MicroBatch:
    """Right-pad examples into LongTensors; padded labels are ``IGNORE_INDEX``."""
    if not examples:
        raise ValueError("cannot collate an empty micro-batch")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return MicroBatch(input_ids, attention_mask, labels)


def checked_examples(examples: Sequence[Example], max_seq_len: int, what: str = "") -> list[Example]:
    """``examples`` as a list, once each fits ``max_seq_len`` and supervises a token."""
    for i, e in enumerate(examples):
        if len(e.input_ids) > max_seq_len or e.supervised_tokens == 0:
            raise ValueError(f"{what}example {i} is longer than max_seq_len or has no "
                             "supervised token; encode it with data.encode_record")
    return list(examples)
