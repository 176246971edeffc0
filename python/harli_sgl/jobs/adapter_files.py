"""Whether an adapter directory on disk can be loaded, checked before the engine sees it.

An adapter is a directory with PEFT's two files, ``adapter_config.json`` and
``adapter_model.safetensors``. A job's adapter is written once and never
rewritten, but a directory can still be lost or damaged afterwards (deleted by
hand, a disk restored from an old backup, a file truncated by a full disk on a
copy). Handed such a directory, SGLang's loader fails with whatever the
underlying library says: a missing directory is taken for a Hugging Face Hub
repo id ("Repo id must be in the form ..." with the server path in it), a
truncated file fails with safetensors' "Error while deserializing header", and
the request that named the adapter answered 400 with that text.

:func:`adapter_problem` reads only what a loader would trip over, cheaply: the
config file parses as a JSON object, and the safetensors file's header (its
first 8 bytes give the header's length, the header is JSON listing each
tensor's byte range) is readable and every tensor's bytes lie inside the file,
which is what a truncated file fails. It does not read the tensors themselves.
Its answer names files, never the directory: it is shown to tenants.
"""

from __future__ import annotations

import json
import os
import struct

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
# safetensors refuses headers above 100 MB; a length beyond that is a damaged file.
MAX_HEADER_BYTES = 100_000_000


def adapter_problem(path: str) -> str | None:
    """What makes the adapter directory at ``path`` unloadable; None if it looks whole."""
    if not os.path.isdir(path):
        return "its directory is missing"
    config = os.path.join(path, CONFIG)
    try:
        with open(config, "rb") as f:
            parsed = json.loads(f.read())
    except FileNotFoundError:
        return f"{CONFIG} is missing"
    except (OSError, ValueError):
        return f"{CONFIG} is unreadable"
    if not isinstance(parsed, dict):
        return f"{CONFIG} is not a JSON object"
    return _weights_problem(os.path.join(path, WEIGHTS))


def _weights_problem(weights: str) -> str | None:
    try:
        size = os.path.getsize(weights)
        with open(weights, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{WEIGHTS} is truncated (no header)"
            (header_len,) = struct.unpack("<Q", head)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                return f"{WEIGHTS} is truncated or damaged (its header is incomplete)"
            header = json.loads(f.read(header_len))
    except FileNotFoundError:
        return f"{WEIGHTS} is missing"
    except OSError:
        return f"{WEIGHTS} is unreadable"
    except ValueError:  # JSON (UnicodeDecodeError is one too)
        return f"{WEIGHTS} is damaged (its header is not valid)"
    if not isinstance(header, dict):
        return f"{WEIGHTS} is damaged (its header is not valid)"
    data_bytes = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            return f"{WEIGHTS} is damaged (its header is not valid)"
        if offsets[1] > data_bytes:
            return f"{WEIGHTS} is truncated ({size} bytes; its tensors need {8 + header_len + offsets[1]})"
    return None
