from __future__ import annotations

from harli_sgl.platform.cpu_recipe import CPU_FLAG_DEFAULTS, given_flags, with_defaults


def test_adds_only_flags_the_operator_did_not_give():
    argv, added = with_defaults(["--dtype=bfloat16", "--max-running-requests", "4"], CPU_FLAG_DEFAULTS)
    assert "--dtype float32" not in added and "--max-running-requests 16" not in added
    assert "--device cpu" in added and "--attention-backend torch_native" in added
    assert argv[:3] == ["--dtype=bfloat16", "--max-running-requests", "4"]
    assert argv.count("--dtype") == 0 and argv.count("--device") == 1


def test_given_flags_understands_aliases():
    assert "model_path" in given_flags(["--model", "x"])
    assert "model_path" in given_flags(["--model-path=x"])
    assert "model_path" not in given_flags(["--port", "1"])
