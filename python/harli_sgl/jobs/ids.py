"""Object ids and fine-tuned model names: generation and strict validation.

Every id the API hands out is ``<prefix>-<24 lowercase hex>`` (96 random bits),
with one prefix per object type: ``file``, ``ftjob``, ``ftevent``, ``ftckpt``.
File ids double as file names (``<workdir>/files/<id>.jsonl``), so validation is
an allow-list (a full match of exactly the shape we generate), never a deny-list
of ``..`` and ``/``: anything else, path tricks included, is rejected before it
can reach the filesystem or SQL, and can therefore never name a path.

Fine-tuned models are named the way OpenAI names them,
``ft:<base model>:<tenant>:<suffix>:<12 hex of the job id>`` (an empty suffix
when the job gave none), and that name alone selects the adapter. Its files live
in a directory named ``ft-<suffix or "adapter">-<12 hex>`` (:func:`adapter_dir_name`),
which holds no ``:`` or ``/`` whatever the base model is called; before tenants
that was also the model's name, so adapters of older jobs keep it as theirs.
"""

from __future__ import annotations

import re
import secrets

FILE = "file"
JOB = "ftjob"
EVENT = "ftevent"
CHECKPOINT = "ftckpt"
PREFIXES = (FILE, JOB, EVENT, CHECKPOINT)

HEX_CHARS = 24
SHORT_HEX_CHARS = 12
MAX_SUFFIX_CHARS = 64
DEFAULT_SUFFIX = "adapter"

# [0-9a-f] rather than \w or re.I: only the exact alphabet we generate, no
# Unicode digits, no upper case, and fullmatch so a trailing newline fails too.
_ID = {p: re.compile(rf"{p}-[0-9a-f]{{{HEX_CHARS}}}") for p in PREFIXES}
_SUFFIX = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_SUFFIX_CHARS - 1}}}")


class InvalidId(ValueError):
    """A string that is not an id of the expected type (and so names no object)."""


def new_id(prefix: str) -> str:
    """A fresh random id such as ``file-3f2a...`` for one of :data:`PREFIXES`."""
    if prefix not in _ID:
        raise ValueError(f"unknown id prefix {prefix!r}; expected one of {PREFIXES}")
    return f"{prefix}-{secrets.token_hex(HEX_CHARS // 2)}"


def is_valid_id(value: object, prefix: str) -> bool:
    """True only for a string exactly of the shape :func:`new_id` makes for ``prefix``."""
    return isinstance(value, str) and _ID[prefix].fullmatch(value) is not None


def check_id(value: object, prefix: str) -> str:
    """Return ``value`` if it is a valid ``prefix`` id, else raise :class:`InvalidId`."""
    if not is_valid_id(value, prefix):
        raise InvalidId(f"{value!r} is not a valid {prefix} id (expected '{prefix}-' + "
                        f"{HEX_CHARS} lowercase hex digits)")
    return value  # type: ignore[return-value]


def check_suffix(suffix: object) -> str | None:
    """Validate a job's ``suffix``: None, or 1-64 of ``[A-Za-z0-9_-]`` starting alphanumeric.

    Stricter than OpenAI (which allows any 64 characters) because the suffix ends up
    in a model name that must not contain ``:`` or ``/`` and may become a directory.
    """
    if suffix is None:
        return None
    if not isinstance(suffix, str) or _SUFFIX.fullmatch(suffix) is None:
        raise ValueError(f"suffix must be 1-{MAX_SUFFIX_CHARS} characters of letters, digits, "
                         f"'_' or '-', starting with a letter or digit; got {suffix!r}")
    return suffix


def adapter_dir_name(job_id: str, suffix: str | None = None) -> str:
    """Where a job's adapter lives under ``adapters/``, e.g. ``ft-support-3f2a9c0b1d4e``.

    Jobs finished before tenants also use it as their model name.
    """
    return f"ft-{check_suffix(suffix) or DEFAULT_SUFFIX}-{_short(job_id)}"


def fine_tuned_model_name(job_id: str, suffix: str | None, base: str, tenant: str) -> str:
    """The model name a succeeded job publishes, e.g. ``ft:llama:acme:support:3f2a9c0b1d4e``."""
    return f"ft:{base}:{tenant}:{check_suffix(suffix) or ''}:{_short(job_id)}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    """A checkpoint's model name: OpenAI's ``<model>:ckpt-step-<n>``; ``-step-<n>`` for old names."""
    if fine_tuned_model.startswith("ft:"):
        return f"{fine_tuned_model}:ckpt-step-{step}"
    return f"{fine_tuned_model}-step-{step}"


_CHECKPOINT_NAME = re.compile(r"(ft:.+):ckpt-step-([0-9]{1,9})|(ft-.+)-step-([0-9]{1,9})")
_JOB_HEX = re.compile(rf"[0-9a-f]{{{SHORT_HEX_CHARS}}}")


def parse_checkpoint_model_name(name: object) -> tuple[str, int, str] | None:
    """``(fine-tuned model, step, 12 hex of the job id)`` for a name
    :func:`checkpoint_model_name` could have made; None for any other string.

    The job hex narrows the store's search to one job; the caller still compares the
    whole name with the job's, so a near-miss names nothing.
    """
    match = _CHECKPOINT_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return None
    model = match.group(1) or match.group(3)
    step = int(match.group(2) or match.group(4))
    job_hex = model.rsplit(":" if model.startswith("ft:") else "-", 1)[-1]
    if _JOB_HEX.fullmatch(job_hex) is None:
        return None
    return model, step, job_hex


def _short(job_id: str) -> str:
    return check_id(job_id, JOB)[len(JOB) + 1:][:SHORT_HEX_CHARS]
