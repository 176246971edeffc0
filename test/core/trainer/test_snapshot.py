"""A snapshot is a private copy, and it writes what PEFT's save_pretrained writes."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from harli_sgl.core.trainer.job_trainer import JobTrainer

from core.trainer.test_job_trainer import CONFIG, drive


def test_a_snapshot_is_unchanged_by_training_and_matches_save_pretrained(
        make_model, tokenizer, random_examples, tmp_path):
    trainer = JobTrainer(make_model("llama"), tokenizer, random_examples(7, seed=3), CONFIG)
    trainer.run(trainer.remaining_step_units)  # exactly one step
    snap = trainer.snapshot_checkpoint()
    trainer.peft_model.save_pretrained(str(tmp_path / "peft"))
    frozen = {k: v.clone() for k, v in snap.adapter.items()}
    moments = [s["exp_avg"].clone() for s in snap.optimizer["state"].values()]

    drive(trainer, seed=2, until_step=3)  # the live tensors move on
    assert all(torch.equal(snap.adapter[k], frozen[k]) for k in frozen)
    assert all(torch.equal(s["exp_avg"], m)
               for s, m in zip(snap.optimizer["state"].values(), moments))
    live = trainer.optimizer.state_dict()["state"]
    assert not torch.equal(next(iter(live.values()))["exp_avg"], moments[0])

    snap.write(str(tmp_path / "ours"))
    ours, peft = tmp_path / "ours", tmp_path / "peft"
    weights, expected = load_file(ours / "adapter_model.safetensors"), load_file(
        peft / "adapter_model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    with safe_open(ours / "adapter_model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    # PEFT writes target_modules from a set: its order follows string hashing, per process.
    ours_cfg, peft_cfg = (json.loads((d / "adapter_config.json").read_text()) for d in (ours, peft))
    assert sorted(ours_cfg.pop("target_modules")) == sorted(peft_cfg.pop("target_modules"))
    assert ours_cfg == peft_cfg
    assert json.loads((ours / "state.json").read_text())["completed_steps"] == 1
    assert torch.load(ours / "optimizer.pt", weights_only=True)["state"].keys() == \
        snap.optimizer["state"].keys()
    assert sorted(os.listdir(tmp_path)) == ["ours", "peft"]  # no temporary directory left
