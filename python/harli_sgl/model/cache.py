"""Model directories built once into the cache, atomically, whoever asks first.

A built model lives in ``$HARLI_CACHE_DIR/models/<name>-<key>``, where the key
hashes everything that decides its bytes (the recipe and the versions of the
libraries that wrote it), so a changed recipe builds a new directory instead of
reusing a stale one. A build writes into a temporary sibling and renames it into
place with a ``.complete`` marker inside, under an exclusive ``flock`` on
``<dir>.lock``: concurrent callers (two clones, a test session and a server)
wait for one build instead of racing, and a build that dies leaves nothing a
later caller would mistake for a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable

from harli_sgl import env

COMPLETE = ".complete"


def key_of(recipe: dict) -> str:
    """A short hash of a JSON-serialisable recipe."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def model_dir(name: str, key: str) -> str:
    return os.path.join(env.CACHE_DIR.get(), "models", f"{name}-{key}")


def is_built(path: str) -> bool:
    return os.path.exists(os.path.join(path, COMPLETE))


def build_once(path: str, write: Callable[[str], None]) -> str:
    """Return ``path``, first running ``write(tmp_dir)`` and renaming it there if not built."""
    if is_built(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(path):  # built by whoever held the lock before us
            return path
        tmp = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(path))
        try:
            write(tmp)
            open(os.path.join(tmp, COMPLETE), "w").close()
            shutil.rmtree(path, ignore_errors=True)  # a half-written leftover of an old layout
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
