"""Writing a checkpoint directory so that a reader never sees half of one.

A checkpoint is a directory (PEFT adapter files, ``optimizer.pt``,
``state.json``). It is written into a temporary sibling, every file is fsynced,
and only then is it renamed into place; a crash at any moment leaves either the
previous checkpoint or the new one, plus at worst a stray ``.tmp-*`` directory.
Replacing an existing directory moves the old one aside first, because rename
cannot overwrite a non-empty directory.

A process killed mid-write leaves its ``.tmp-*`` (and, between the two renames,
``.old-*``) directory behind, and nothing else would ever remove it: across
restarts they piled up beside the checkpoints. :func:`sweep_interrupted_writes`
clears them when the next writer of that directory starts (a job's new holder,
before it resumes), and puts back an old directory whose replacement never
landed, so the sweep itself loses nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def write_dir_atomically(target: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_dir)`` and publish ``tmp_dir`` as ``target`` in one rename."""
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
    try:
        write(tmp)
        for name in os.listdir(tmp):
            _fsync(os.path.join(tmp, name))
        _fsync(tmp)
        old = None
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(target)}-", dir=parent)
            os.replace(target, os.path.join(old, "dir"))
        os.replace(tmp, target)
        _fsync(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_interrupted_writes(parent: str, name_prefix: str = "") -> list[str]:
    """Remove what interrupted :func:`write_dir_atomically` calls left in ``parent``.

    Only entries for targets whose name starts with ``name_prefix`` are touched, so a
    writer sweeps its own. Call it only while no write to those targets is in flight.
    Returns the paths removed (or restored).
    """
    if not os.path.isdir(parent):
        return []
    swept = []
    for entry in sorted(os.listdir(parent)):
        for marker in (".tmp-", ".old-"):
            if not entry.startswith(marker + name_prefix):
                continue
            path = os.path.join(parent, entry)
            target = os.path.join(parent, entry[len(marker):].rsplit("-", 1)[0])
            kept = os.path.join(path, "dir")
            if marker == ".old-" and os.path.isdir(kept) and not os.path.exists(target):
                os.replace(kept, target)  # the new one never landed: the old one stands
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


def write_json(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def read_state(checkpoint: str) -> dict:
    missing = [name for name in (STATE_FILE, OPTIMIZER_FILE, *ADAPTER_FILES)
               if not os.path.isfile(os.path.join(checkpoint, name))]
    if missing:
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint; missing {missing}")
    with open(os.path.join(checkpoint, STATE_FILE)) as f:
        return json.load(f)


def _fsync(path: str) -> None:
    # Directories too: on Linux an fsync'd directory makes its entries durable.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
