from __future__ import annotations

import os

import pytest

from harli_sgl.jobs.artifacts import SharedDir


def test_a_written_directory_appears_whole_under_its_final_name(tmp_path):
    store = SharedDir(str(tmp_path))
    final = store.path("adapters", "m1")
    with store.writing("adapters", "m1") as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "adapter_model.safetensors"), "wb") as f:
            f.write(b"x" * 10)
        assert not os.path.exists(final)  # nothing visible while it is being written
    assert os.listdir(final) == ["adapter_model.safetensors"]
    assert os.listdir(os.path.dirname(final)) == ["m1"]  # no temporary left behind


def test_a_failed_write_leaves_no_trace_and_keeps_the_previous_version(tmp_path):
    store = SharedDir(str(tmp_path))
    with store.writing("checkpoints", "job", "step-1") as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "v1"), "w").close()
    with pytest.raises(RuntimeError):
        with store.writing("checkpoints", "job", "step-1") as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "v2"), "w").close()
            raise RuntimeError("disk went away")
    final = store.path("checkpoints", "job", "step-1")
    assert os.listdir(final) == ["v1"]
    assert os.listdir(os.path.dirname(final)) == ["step-1"]


def test_a_new_version_replaces_a_directory_and_a_file(tmp_path):
    store = SharedDir(str(tmp_path))
    for version in ("a", "b"):
        with store.writing("adapters", "m") as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, version), "w").close()
        with store.writing("profiles", "p.json") as tmp:
            with open(tmp, "w") as f:
                f.write(version)
    assert os.listdir(store.path("adapters", "m")) == ["b"]
    assert open(store.path("profiles", "p.json")).read() == "b"
    assert store.path("profiles", "p.json") == str(tmp_path / "predictor" / "p.json")
    assert sorted(os.listdir(tmp_path / "adapters")) == ["m"]


@pytest.mark.parametrize("name", ["..", ".", "", "a/b"])
def test_names_cannot_leave_the_tree(tmp_path, name):
    with pytest.raises(ValueError):
        SharedDir(str(tmp_path)).path("adapters", name)
    with pytest.raises(ValueError):
        SharedDir(str(tmp_path)).path("secrets", "x")
