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


def test_every_declared_flag_parses_into_its_field():
    cfg, rest = split_argv(["--harli-db", "postgresql://u@127.0.0.1:5/h", "--harli-shared-dir", "/s",
                            "--harli-instance-id", "a", "--harli-lease-s", "7.5",
                            "--harli-lora-target-modules", "q_proj", "v_proj",
                            "--harli-max-running-jobs", "2", "--harli-cpu-split", "0/1"])
    assert rest == []
    assert cfg.db == "postgresql://u@127.0.0.1:5/h" and cfg.shared_dir == "/s"
    assert cfg.instance_id == "a" and cfg.lease_s == 7.5 and cfg.max_running_jobs == 2
    assert cfg.lora_target_modules == ("q_proj", "v_proj") and cfg.cpu_split == "0/1"


def test_shared_paths_resolve_from_the_workdir_or_the_shared_dir(tmp_path):
    alone = HarliConfig(workdir=str(tmp_path / "w")).resolved("cpu")
    assert alone.shared_dir == str(tmp_path / "w")
    assert alone.profile_dir == str(tmp_path / "w" / "predictor")
    fleet = HarliConfig(workdir=str(tmp_path / "w"), shared_dir=str(tmp_path / "s")).resolved("cpu")
    assert fleet.workdir == str(tmp_path / "w") and fleet.profile_dir == str(tmp_path / "s" / "predictor")


def test_db_must_be_a_postgresql_url():
    with pytest.raises(ValueError, match="postgresql://"):
        HarliConfig(db="mysql://x")
    with pytest.raises(ValueError, match="lease"):
        HarliConfig(lease_s=0)


def test_tenant_quota_flags():
    cfg, _ = split_argv(["--harli-tenant-max-running-jobs", "2", "--harli-tenant-max-queued-jobs",
                         "5", "--harli-tenant-max-stored-bytes", "1000"])
    assert cfg.tenant_limits.to_dict() == {"max_running_jobs": 2, "max_queued_jobs": 5,
                                           "max_stored_bytes": 1000}
    assert split_argv([])[0].tenant_limits.to_dict() == dict.fromkeys(
        ("max_running_jobs", "max_queued_jobs", "max_stored_bytes"))
    with pytest.raises(ValueError, match="max_queued_jobs must be an integer >= 0"):
        HarliConfig(tenant_max_queued_jobs=-1)


def test_widen_decode_is_a_choice():
    cfg, _ = split_argv(["--harli-widen-decode", "never"])
    assert cfg.widen_decode == "never" and HarliConfig().widen_decode == "auto"
    with pytest.raises(ValueError, match="widen-decode"):
        HarliConfig(widen_decode="sometimes")
