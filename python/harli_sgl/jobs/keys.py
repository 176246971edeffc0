"""API keys: how they are made, and the only form in which they are stored.

A key is ``hk-`` and 43 characters of ``secrets.token_urlsafe(32)``: 256
random bits, shown to the admin who creates it exactly once. The store keeps
its SHA-256 (:func:`key_hash`) and its last four characters (:func:`key_hint`,
enough to tell keys apart in a list, useless for guessing one). A plain hash,
not a slow password hash, is enough because the key is random and long: there
is no dictionary to try, and a per-request lookup stays one indexed query.
"""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "hk-"
KEY_BYTES = 32
HINT_CHARS = 4
_KEY_ID = re.compile(r"key-[0-9a-f]{24}")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def new_key_id() -> str:
    """The public id of a key (what lists show and what a revoke names)."""
    return f"key-{secrets.token_hex(12)}"


def is_valid_key_id(value: object) -> bool:
    return isinstance(value, str) and _KEY_ID.fullmatch(value) is not None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_hint(key: str) -> str:
    return "..." + key[-HINT_CHARS:]
