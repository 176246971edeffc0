from __future__ import annotations

import os

from harli_sgl.core.predictor.profile_store import load_profile, profile_path, save_profile


def test_the_key_names_what_decode_speed_depends_on(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    base = profile_path(str(tmp_path / "p"), str(model), "cpu", "bfloat16", 1)
    assert base.startswith(str(tmp_path / "p") + os.sep) and base.endswith("-cpu-bfloat16-t1.json")
    assert base != profile_path(str(tmp_path / "p"), str(model), "cpu", "bfloat16", 2)
    assert base != profile_path(str(tmp_path / "p"), str(model), "cpu", "float32", 1)
    (model / "config.json").write_text('{"hidden_size": 16}')  # another model, same directory
    assert base != profile_path(str(tmp_path / "p"), str(model), "cpu", "bfloat16", 1)


def test_a_profile_round_trips_and_a_broken_one_is_ignored(tmp_path):
    path = str(tmp_path / "shared" / "p.json")
    assert load_profile(path) is None
    save_profile(path, {"w": [1, 2]}, 3.5)
    assert load_profile(path) == {"predictor": {"w": [1, 2]}, "idle_units_per_ms": 3.5}
    assert os.listdir(tmp_path / "shared") == ["p.json"]  # no temporary left
    with open(path, "w") as f:
        f.write('{"predictor": ')
    assert load_profile(path) is None
    with open(path, "w") as f:
        f.write('{"other": 1}')
    assert load_profile(path) is None
