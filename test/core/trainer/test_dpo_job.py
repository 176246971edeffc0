"""A DPO job end to end on a tiny model: the margin grows, references are kept, validation is
DPO's loss on held-out pairs, resume is exact."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from harli_sgl.core.trainer import validation
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import IGNORE_INDEX, Example
from harli_sgl.core.trainer.dpo import sequence_logps
from harli_sgl.core.trainer.dpo_job import DpoJobTrainer
from harli_sgl.core.trainer.preference import PreferenceExample, collate_pairs

from .conftest import VOCAB
from .test_dpo import plain_logps
from .test_job_trainer import drive, lora_weights

CONFIG = TrainConfig(n_epochs=3, batch_size=4, micro_batch_size=2, learning_rate=5e-3, lora_r=4,
                     lora_alpha=8, target_modules=("q_proj", "v_proj", "down_proj"), seed=5,
                     max_seq_len=40, checkpoint_every_steps=0, max_grad_norm=1.0, dpo_beta=0.5)
GOOD = [7, 8, 9, 7, 8, 9]  # every preferred answer; non-preferred answers are random


def pattern_pairs(n: int, seed: int) -> list[PreferenceExample]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = [rng.randrange(20, VOCAB) for _ in range(rng.randint(3, 8))]
        bad = [rng.randrange(20, VOCAB) for _ in range(rng.randint(4, 8))]
        pairs.append(PreferenceExample(*(Example(prompt + a, [IGNORE_INDEX] * len(prompt) + a)
                                         for a in (GOOD, bad))))
    return pairs


def margin(model, pairs: list[PreferenceExample]) -> float:
    """Mean log-prob of preferred minus non-preferred answers (no grad, dropout off)."""
    mb = collate_pairs(pairs, 0)
    was = model.training
    model.eval()
    with torch.no_grad():
        logps = sequence_logps(model(input_ids=mb.input_ids,
                                     attention_mask=mb.attention_mask).logits, mb.labels)
    model.train(was)
    k = len(pairs)
    return float((logps[:k] - logps[k:]).mean())


def test_a_dpo_job_raises_the_margin_with_references_computed_once(make_model, tokenizer):
    pairs, held_out = pattern_pairs(8, seed=1), pattern_pairs(6, seed=2)
    events = []
    trainer = DpoJobTrainer(make_model("llama"), tokenizer, pairs, CONFIG,
                            on_event=lambda kind, msg, data: events.append((kind, msg, data)))
    with trainer.peft_model.disable_adapter():
        base = margin(trainer.peft_model, held_out)
    rng, reference_in_later_epochs = random.Random(3), False
    while not trainer.done:
        trainer.run(rng.randint(0, 4 * trainer.min_piece_units))
        if trainer.position.epoch > 0:
            assert len(trainer._references) == len(pairs)
            reference_in_later_epochs |= trainer._chunked.computing_reference
    assert not reference_in_later_epochs
    assert margin(trainer.peft_model, held_out) > base + 1.0

    steps = [data for kind, _, data in events if kind == "step"]
    assert len(steps) == trainer.total_steps == 6
    for data in steps:
        assert {"train_loss", "train_chosen_reward", "train_rejected_reward",
                "train_reward_margin", "train_reward_accuracy"} <= set(data)
        assert data["train_reward_margin"] == pytest.approx(
            data["train_chosen_reward"] - data["train_rejected_reward"])
    # The first step starts at the reference (loss log 2, margin 0); training moves it.
    assert steps[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert steps[-1]["train_loss"] < 0.5 and steps[-1]["train_reward_accuracy"] == 1.0
    assert events[-1][0] == "done"


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_dpo_resume_from_checkpoint_equals_uninterrupted_training(dropout, make_model, tokenizer,
                                                                  tmp_path):
    pairs, held_out = pattern_pairs(7, seed=4), pattern_pairs(3, seed=6)
    config = replace(CONFIG, n_epochs=2, lora_dropout=dropout, checkpoint_every_steps=2)
    straight = DpoJobTrainer(make_model("llama"), tokenizer, pairs, config,
                             validation_examples=held_out)
    drive(straight, seed=4)

    paths = []
    first = DpoJobTrainer(make_model("llama"), tokenizer, pairs, config,
                          validation_examples=held_out,
                          checkpoint_dir=lambda step: paths.append(str(tmp_path / f"s{step}"))
                          or paths[-1])
    drive(first, seed=5, until_step=3)
    assert paths == [str(tmp_path / "s2")]
    resumed = DpoJobTrainer.resume(paths[0], make_model("llama"), tokenizer, pairs, config,
                                   validation_examples=held_out)
    assert resumed.completed_steps == 2
    drive(resumed, seed=6)
    expected, actual = lora_weights(straight.peft_model), lora_weights(resumed.peft_model)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert resumed.last_loss == straight.last_loss
    # The validation pairs' references, recomputed after the resume, give the same numbers.
    assert resumed.last_metrics["full_valid_loss"] == pytest.approx(
        straight.last_metrics["full_valid_loss"], rel=1e-6)
    assert resumed.last_metrics["full_valid_reward_accuracy"] == \
        straight.last_metrics["full_valid_reward_accuracy"]

    with pytest.raises(ValueError, match="config differs"):
        DpoJobTrainer.resume(paths[0], make_model("llama"), tokenizer, pairs,
                             replace(config, dpo_beta=0.2))


def test_a_dpo_job_needs_beta_and_validation_pairs(make_model, tokenizer):
    pairs = pattern_pairs(2, seed=0)
    with pytest.raises(ValueError, match="needs config.dpo_beta"):
        DpoJobTrainer(make_model("llama"), tokenizer, pairs, replace(CONFIG, dpo_beta=None))
    with pytest.raises(ValueError, match="validation examples must be preference pairs"):
        DpoJobTrainer(make_model("llama"), tokenizer, pairs, CONFIG,
                      validation_examples=[pairs[0].preferred])
    with pytest.raises(ValueError, match="dpo_beta must be"):
        replace(CONFIG, dpo_beta=-1.0)


def plain_dpo_validation(model, pairs: list[PreferenceExample], beta: float, pad_id: int):
    """DPO's loss, mean reward margin and reward accuracy on ``pairs`` from one plain HF+PEFT
    forward of them all (dropout off): the policy with the adapter on, the reference off."""
    mb = collate_pairs(pairs, pad_id)
    was = model.training
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():
            ref = plain_logps(model(input_ids=mb.input_ids,
                                    attention_mask=mb.attention_mask).logits, mb.labels)
        pol = plain_logps(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits,
                          mb.labels)
    model.train(was)
    k = len(pairs)
    chosen, rejected = beta * (pol[:k] - ref[:k]), beta * (pol[k:] - ref[k:])
    return (-F.logsigmoid(chosen - rejected).mean().item(), (chosen - rejected).mean().item(),
            (chosen > rejected).float().mean().item())


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_dpo_validation_is_the_plain_dpo_loss_on_held_out_pairs(dropout, make_model, tokenizer,
                                                                tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "SAMPLE_EXAMPLES", 3)  # the sample is 3 of the 5 pairs
    monkeypatch.setattr(validation, "SAMPLE_POINTS", 2)  # 4 steps: a sample every 2
    pairs, held_out = pattern_pairs(8, seed=1), pattern_pairs(5, seed=2)
    config = replace(CONFIG, n_epochs=2, lora_dropout=dropout, checkpoint_every_steps=3)
    plain = DpoJobTrainer(make_model("llama"), tokenizer, pairs, config)
    drive(plain, seed=1)

    events, kept = [], {}
    trainer = DpoJobTrainer(make_model("llama"), tokenizer, pairs, config,
                            validation_examples=held_out,
                            on_event=lambda kind, msg, data: events.append((kind, data)),
                            checkpoint_dir=lambda step: str(tmp_path / f"s{step}"))
    rng = random.Random(2)
    while not trainer.done:
        trainer.run(rng.randint(0, 4 * trainer.min_piece_units))
        trainer.write_due_checkpoint()
        if not kept and trainer._valid_references:
            kept = dict(trainer._valid_references)
    # Validating changes nothing about training, not even dropout's random draws.
    expected, actual = lora_weights(plain.peft_model), lora_weights(trainer.peft_model)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    # Every validation pair's reference was computed once, in the first evaluation, and kept.
    assert sorted(kept) == list(range(5))
    assert all(trainer._valid_references[i] is kept[i] for i in kept)

    steps = {d["step"]: d for kind, d in events if kind == "step"}
    assert sorted(steps) == [1, 2, 3, 4]
    assert [s for s, d in steps.items() if "valid_loss" in d] == [2, 3, 4]
    assert [s for s, d in steps.items() if "full_valid_loss" in d] == [3, 4]  # checkpoint, end
    assert [steps[s]["valid_examples"] for s in (2, 3, 4)] == [3, 5, 5]
    for data in steps.values():
        assert not any(k.endswith("mean_token_accuracy") for k in data)  # DPO has none
        assert "train_reward_margin" in data
    for s in (2, 3, 4):
        assert steps[s]["valid_reward_margin"] == pytest.approx(
            steps[s]["valid_chosen_reward"] - steps[s]["valid_rejected_reward"])
    # The last evaluation is DPO's loss and rewards of the trained adapter on all held-out pairs.
    last = steps[4]
    loss, margin, accuracy = plain_dpo_validation(trainer.peft_model, held_out, config.dpo_beta,
                                                  trainer.pad_id)
    assert last["full_valid_loss"] == last["valid_loss"] == pytest.approx(loss, rel=1e-5)
    assert last["full_valid_reward_margin"] == pytest.approx(margin, rel=1e-4, abs=1e-6)
    assert last["full_valid_reward_accuracy"] == last["valid_reward_accuracy"] == pytest.approx(
        accuracy)
    assert last["full_valid_loss"] < 0.6931  # below the reference's log 2: it learned
    assert [kind for kind, _ in events][-3:] == ["step", "epoch", "done"]  # done once evaluated
    assert events[-1][1]["full_valid_reward_accuracy"] == last["full_valid_reward_accuracy"]
    checkpoint = next(d for kind, d in events if kind == "checkpoint")
    assert checkpoint["metrics"] == {k: v for k, v in steps[3].items() if k in (
        "step", "train_loss", "train_reward_margin", "train_reward_accuracy", "valid_loss",
        "valid_reward_margin", "valid_reward_accuracy", "full_valid_loss",
        "full_valid_reward_margin", "full_valid_reward_accuracy")}
    assert {"full_valid_loss", "full_valid_reward_accuracy"} <= set(checkpoint["metrics"])
