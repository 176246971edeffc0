from __future__ import annotations

import dataclasses
import os

import pytest

from harli_sgl.config import DEFAULT_TPOT_SLO_MS, HarliConfig, split_argv


def test_split_argv_separates_harli_flags_from_sglang_flags():
    cfg, rest = split_argv(["--model-path", "m", "--harli-mode", "idle", "--tpot-slo-ms", "80",
                            "--port", "1234", "--harli-workdir=/tmp/w"])
    assert rest == ["--model-path", "m", "--port", "1234"]
    assert (cfg.mode, cfg.tpot_slo_ms, cfg.workdir) == ("idle", 80.0, "/tmp/w")


def test_defaults_resolve_per_device(tmp_path):
    cfg, _ = split_argv([])
    assert cfg.mode == "harli" and cfg.tpot_slo_ms is None
    assert cfg.resolved("cpu").tpot_slo_ms == DEFAULT_TPOT_SLO_MS["cpu"]
    assert cfg.resolved("cuda").tpot_slo_ms == DEFAULT_TPOT_SLO_MS["cuda"]
    assert os.path.isabs(cfg.resolved("cpu").workdir)
    explicit = dataclasses.replace(cfg, tpot_slo_ms=42.0)
    assert explicit.resolved("cuda").tpot_slo_ms == 42.0


def test_config_is_frozen_and_validated():
    cfg = HarliConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "off"  # type: ignore[misc]
    with pytest.raises(ValueError, match="harli-mode"):
        HarliConfig(mode="turbo")
    with pytest.raises(ValueError, match="tpot-slo-ms"):
        HarliConfig(tpot_slo_ms=-1)


def test_unknown_mode_is_rejected_at_parse_time():
    with pytest.raises(SystemExit):
        split_argv(["--harli-mode", "turbo"])
