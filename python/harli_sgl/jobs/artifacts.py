"""Artifacts: the bytes that outlive a process and that every instance of a fleet must reach.

Four kinds live here: uploaded ``files``, job ``checkpoints``, finished
``adapters`` and the predictor's latency ``profiles``. A single instance keeps
them in its workdir; a fleet points ``--harli-shared-dir`` at a directory every
instance mounts (NFS, a shared volume), so an adapter trained on instance A is
loaded from the same path by instance B, and a job that B resumes after A died
finds A's checkpoints.

The interface is two calls. :meth:`Artifacts.path` is where a reader finds an
artifact as a local path (SGLang loads adapters from a directory, PEFT resumes
from one). :meth:`Artifacts.writing` hands a writer a private temporary path
and publishes it under its final name only when the writer finishes without an
exception, by ``rename``, which is atomic on a POSIX file system: a reader sees
the whole artifact or nothing, never half a file. An object store could
implement the same two calls (``path`` fetching into a local cache on first
use, ``writing`` uploading on exit); only the shared directory exists today.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

KINDS = ("files", "checkpoints", "adapters", "profiles")


class Artifacts(Protocol):
    root: str

    def path(self, kind: str, *parts: str) -> str:
        """The local path of an artifact (it may not exist yet)."""

    def writing(self, kind: str, *parts: str) -> Iterator[str]:
        """Context manager: a temporary path to write; published atomically on success."""


class SharedDir:
    """:class:`Artifacts` in a directory tree: ``<root>/<kind>/<parts...>``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, kind: str, *parts: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
        for part in parts:
            # Names come from validated ids and model names; this guards the invariant.
            if not part or part in (".", "..") or os.sep in part:
                raise ValueError(f"{part!r} is not a plain artifact name")
        return os.path.join(self.root, "predictor" if kind == "profiles" else kind, *parts)

    @contextmanager
    def writing(self, kind: str, *parts: str) -> Iterator[str]:
        final = self.path(kind, *parts)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        # Same directory as the final name, so the rename never crosses file systems; the
        # random part keeps two writers (two instances) from sharing a temporary.
        tmp = f"{final}.{secrets.token_hex(4)}.tmp"
        try:
            yield tmp
            _fsync_tree(tmp)
            if os.path.isdir(tmp) and os.path.isdir(final):
                # A directory cannot replace a non-empty one in one rename: move the old
                # one aside first. Readers in between see no artifact, never a mix.
                old = f"{final}.{secrets.token_hex(4)}.old"
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            fsync_path(parent)
        except BaseException:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _fsync_tree(path: str) -> None:
    if os.path.isdir(path):
        for dirpath, _, names in os.walk(path):
            for name in names:
                fsync_path(os.path.join(dirpath, name), directory=False)
            fsync_path(dirpath)
    elif os.path.exists(path):
        fsync_path(path, directory=False)


def fsync_path(path: str, directory: bool = True) -> None:
    """Make ``path`` durable. A directory's entries (a rename into it) are only durable once
    the directory is, but not every platform allows it: there a failure is ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # a file that cannot be made durable is an error; a directory may not allow it
            raise
    finally:
        os.close(fd)
