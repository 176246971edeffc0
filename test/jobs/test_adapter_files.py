"""Checking an adapter directory before the engine loads it, on real PEFT-format files."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from harli_sgl.jobs.adapter_files import CONFIG, WEIGHTS, adapter_problem


@pytest.fixture
def adapter(tmp_path) -> str:
    path = str(tmp_path / "ft-x")
    os.makedirs(path)
    save_file({"a.lora_A.weight": torch.ones(4, 8), "a.lora_B.weight": torch.ones(8, 4)},
              os.path.join(path, WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(path, CONFIG), "w") as f:
        json.dump({"r": 4, "peft_type": "LORA"}, f)
    return path


def test_a_whole_adapter_has_no_problem(adapter):
    assert adapter_problem(adapter) is None


def _truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("damage, problem", [
    (lambda p: os.rename(p, p + ".gone"), "its directory is missing"),
    (lambda p: os.remove(os.path.join(p, CONFIG)), f"{CONFIG} is missing"),
    (lambda p: open(os.path.join(p, CONFIG), "w").write("{not json"), f"{CONFIG} is unreadable"),
    (lambda p: open(os.path.join(p, CONFIG), "w").write("[1]"), f"{CONFIG} is not a JSON object"),
    (lambda p: os.remove(os.path.join(p, WEIGHTS)), f"{WEIGHTS} is missing"),
    (lambda p: _truncate(os.path.join(p, WEIGHTS), 0), f"{WEIGHTS} is truncated (no header)"),
    (lambda p: _truncate(os.path.join(p, WEIGHTS), 20), f"{WEIGHTS} is truncated or damaged"),
    (lambda p: _truncate(os.path.join(p, WEIGHTS), os.path.getsize(os.path.join(p, WEIGHTS)) - 1),
     f"{WEIGHTS} is truncated ("),
    (lambda p: open(os.path.join(p, WEIGHTS), "wb").write(struct.pack("<Q", 4) + b"nope"),
     f"{WEIGHTS} is damaged (its header is not valid)"),
])
def test_each_damage_is_named_by_its_file_and_never_by_its_path(adapter, damage, problem):
    damage(adapter)
    found = adapter_problem(adapter)
    assert found is not None and found.startswith(problem), found
    assert adapter not in found and os.sep not in found


def test_what_safetensors_cannot_load_is_what_is_found(adapter):
    from safetensors import safe_open

    weights = os.path.join(adapter, WEIGHTS)
    _truncate(weights, os.path.getsize(weights) - 1)
    with pytest.raises(Exception):
        with safe_open(weights, "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    assert adapter_problem(adapter) is not None
