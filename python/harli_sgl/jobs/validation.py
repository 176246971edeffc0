"""Upload-time check of a fine-tuning JSONL file: parse every line, check every record's shape.

The finetune worker re-parses and tokenizes the file with
``harli_sgl.core.trainer.data``; this module only has to reject, early and
with the 1-based line number, what the trainer would reject on shape alone, so
a bad file is a 400 at upload instead of a failed job minutes later. It accepts
the same two formats the trainer does (any record may use either):

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
  with at least one assistant message;
* prompt/completion: ``{"prompt": str, "completion": non-empty str}``;

or, for DPO, OpenAI's preference format (``core/trainer/preference.py``):
``{"input": {"messages": [...]}, "preferred_output": [assistant message],
"non_preferred_output": [assistant message]}``. A file is one or the other: the
first record decides, and a record of the other kind is refused on its line,
so a job can check that its method (supervised or DPO) fits its file.

It works on bytes, not text, so an encoding error is reported on its line too.
Lines are split on ``\\n`` only (JSONL; a trailing ``\\r`` is JSON whitespace),
blank lines are skipped but counted, and a leading UTF-8 BOM is tolerated.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple

from harli_sgl.core.trainer import data, preference

_BOM = b"\xef\xbb\xbf"


class JsonlError(ValueError):
    """The file is not usable training data; ``line`` is the 1-based line at fault."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


Method = Literal["supervised", "dpo"]


class FileCheck(NamedTuple):
    records: int
    method: Method  # what the file can train: supervised records, or DPO preference pairs


def validate_training_jsonl(data: bytes) -> int:
    """Raise :class:`JsonlError` unless ``data`` is valid training JSONL; return the record count."""
    return check_training_jsonl(data).records


def check_training_jsonl(data: bytes) -> FileCheck:
    """Raise :class:`JsonlError` unless ``data`` is valid training JSONL of one kind."""
    method: Method | None = None
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    records = 0
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonlError(line_no, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonlError(line_no, f"malformed JSON: {exc.msg} (column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise JsonlError(line_no, f"malformed JSON: {exc}") from None
        kind: Method = "dpo" if preference.is_preference_record(obj) else "supervised"
        if method is not None and kind != method:
            raise JsonlError(line_no, f"a {_NAMES[kind]} record in a file of {_NAMES[method]} "
                                      "records; a file holds one kind")
        method = kind
        validate_record(obj, line_no)
        records += 1
    if records == 0:
        raise JsonlError(1, "the file has no records; expected one JSON object per line")
    return FileCheck(records, method)


_NAMES = {"supervised": "supervised", "dpo": "preference (DPO)"}


def validate_record(obj: Any, line_no: int) -> None:
    """Raise :class:`JsonlError` naming ``line_no`` if ``obj`` is not a usable training record.

    The rules are the trainer's own (``core/trainer/data.py``), so a file accepted
    here is never rejected on shape by the worker later.
    """
    try:
        if preference.is_preference_record(obj):
            preference.validate_preference_record(obj, line_no)
        else:
            data.validate_record(obj, line_no)
    except data.DataError as exc:
        raise JsonlError(line_no, exc.problem) from None
