"""Where a latency profile lives and how it is read and written.

A profile is a fitted predictor plus the job-free training speed measured with
it. Decode speed depends on the model, the device, the dtype and the number of
threads, so those name the file, and every later start with the same key (on
this instance, or on any instance of a fleet that shares the profile directory)
loads it instead of profiling against live traffic. Writes go to a temporary
name and are renamed into place, so a reader, in this process or another
instance, never sees half a profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

logger = logging.getLogger(__name__)


def profile_path(profile_dir: str, model_path: str, device: str, dtype: str, threads: int) -> str:
    """One file per (model, device, dtype, threads): what decode speed depends on."""
    try:
        with open(os.path.join(model_path, "config.json"), "rb") as f:
            model_id = hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        model_id = hashlib.sha256(model_path.encode()).hexdigest()[:12]
    key = f"{os.path.basename(model_path.rstrip('/'))}-{model_id}-{device}-{dtype}-t{threads}"
    return os.path.join(profile_dir, f"{key}.json")


def load_profile(path: str | None) -> dict | None:
    """``{"predictor": state, "idle_units_per_ms": float|None}``, or None (none, or unreadable)."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
        saved["predictor"]  # noqa: B018 - a profile without a predictor is unreadable
        return saved
    except (OSError, ValueError, KeyError) as e:
        logger.warning("harli: ignoring unreadable latency profile %s: %s", path, e)
        return None


def save_profile(path: str, predictor_state: dict, idle_units_per_ms: float | None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"predictor": predictor_state, "idle_units_per_ms": idle_units_per_ms}, f)
    os.replace(tmp, path)
