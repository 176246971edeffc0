"""Atomic checkpoint directories and the sweep of interrupted writes (issue 19, item 12)."""

from __future__ import annotations

import os
import tempfile

import pytest

from harli_sgl.core.trainer.checkpoint import sweep_interrupted_writes, write_dir_atomically


def write_file(name: str, text: str):
    def write(d: str) -> None:
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return write


def test_a_write_killed_midway_leaves_a_temporary_that_the_sweep_removes(tmp_path):
    write_dir_atomically(str(tmp_path / "step-000010"), write_file("a", "10"))
    with pytest.raises(RuntimeError):  # a crash inside write(): finally still cleans up...
        write_dir_atomically(str(tmp_path / "step-000020"), lambda d: (_ for _ in ()).throw(RuntimeError()))
    # ...but a SIGKILL does not run finally: what it leaves, made by hand.
    stray = tempfile.mkdtemp(prefix=".tmp-step-000030-", dir=tmp_path)
    open(os.path.join(stray, "adapter_model.safetensors"), "w").close()
    other = tempfile.mkdtemp(prefix=".tmp-other-", dir=tmp_path)
    assert sweep_interrupted_writes(str(tmp_path), "step-") == [stray]
    assert sorted(os.listdir(tmp_path)) == sorted(["step-000010", os.path.basename(other)])
    assert open(tmp_path / "step-000010" / "a").read() == "10"


def test_an_old_directory_whose_replacement_never_landed_is_put_back(tmp_path):
    # Killed between the two renames of a replacement: the target moved aside, the new one not in.
    old = tempfile.mkdtemp(prefix=".old-adapter-", dir=tmp_path)
    os.makedirs(os.path.join(old, "dir"))
    with open(os.path.join(old, "dir", "w"), "w") as f:
        f.write("previous")
    tmp = tempfile.mkdtemp(prefix=".tmp-adapter-", dir=tmp_path)
    sweep_interrupted_writes(str(tmp_path))
    assert os.listdir(tmp_path) == ["adapter"] and not os.path.exists(tmp)
    assert open(tmp_path / "adapter" / "w").read() == "previous"


def test_an_old_directory_is_dropped_once_its_replacement_landed(tmp_path):
    write_dir_atomically(str(tmp_path / "adapter"), write_file("w", "new"))
    old = tempfile.mkdtemp(prefix=".old-adapter-", dir=tmp_path)
    os.makedirs(os.path.join(old, "dir"))
    sweep_interrupted_writes(str(tmp_path))
    assert os.listdir(tmp_path) == ["adapter"] and open(tmp_path / "adapter" / "w").read() == "new"


def test_a_missing_directory_is_nothing_to_sweep(tmp_path):
    assert sweep_interrupted_writes(str(tmp_path / "none")) == []
