from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from harli_sgl.core.trainer.data import DataPosition, collate, epoch_order
from harli_sgl.core.trainer.job_trainer import (
    ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, JobTrainer, TrainConfig)

CONFIG = TrainConfig(n_epochs=2, batch_size=3, micro_batch_size=2, learning_rate=1e-3, lora_r=4,
                     lora_alpha=8, target_modules=("q_proj", "v_proj", "down_proj"), seed=5,
                     max_seq_len=32, checkpoint_every_steps=0, max_grad_norm=1.0)


def lora_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def drive(trainer: JobTrainer, seed: int, until_step: int | None = None) -> int:
    """Feed random budgets until done (or until ``until_step`` steps completed)."""
    rng = random.Random(seed)
    calls = 0
    while not trainer.done and (until_step is None or trainer.completed_steps < until_step):
        trainer.run(rng.randint(0, 4 * trainer.min_piece_units))
        calls += 1
    return calls


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_job_equals_a_plain_peft_loop_over_the_same_schedule(family, make_model, tokenizer,
                                                             random_examples):
    examples = random_examples(7, seed=21)  # 3 steps per epoch, the last with 1 example
    trainer = JobTrainer(make_model(family), tokenizer, examples, CONFIG)
    assert trainer.total_steps == 6
    drive(trainer, seed=1)

    model = make_model(family)
    torch.manual_seed(CONFIG.seed)
    ref = get_peft_model(model, LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=list(CONFIG.target_modules),
        lora_dropout=0.0, bias="none")).train()
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=CONFIG.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS,
                            weight_decay=WEIGHT_DECAY)
    for epoch in range(CONFIG.n_epochs):
        order = epoch_order(len(examples), CONFIG.seed, epoch)
        for step in range(3):
            chosen = [examples[i] for i in order[step * 3:(step + 1) * 3]]
            mb = collate(chosen, tokenizer.pad_token_id)
            ref(input_ids=mb.input_ids, attention_mask=mb.attention_mask,
                labels=mb.labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CONFIG.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)

    expected, actual = lora_weights(ref), lora_weights(trainer.peft_model)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)
    assert trainer.trained_tokens == 2 * sum(len(e.input_ids) for e in examples)


def test_base_weights_are_wrapped_in_place_and_released(make_model, tokenizer, random_examples):
    base = make_model("llama")
    storage = {n: p.data_ptr() for n, p in base.named_parameters()}
    trainer = JobTrainer(base, tokenizer, random_examples(4), CONFIG)
    wrapped = {n.replace("base_model.model.", "", 1).replace(".base_layer", ""): p.data_ptr()
               for n, p in trainer.peft_model.named_parameters() if "lora_" not in n}
    assert wrapped == storage
    with pytest.raises(ValueError, match="already carries adapter layers"):
        JobTrainer(base, tokenizer, random_examples(4), CONFIG)
    assert trainer.close() is base
    assert not any(isinstance(m, BaseTunerLayer) for m in base.modules())
    assert {n: p.data_ptr() for n, p in base.named_parameters()} == storage
    assert all(p.requires_grad for p in base.parameters())  # flags restored
    JobTrainer(base, tokenizer, random_examples(4), CONFIG).close()


def test_events_progress_and_run_results(make_model, tokenizer, random_examples, tmp_path):
    events = []
    examples = random_examples(5, seed=2)  # 2 steps per epoch
    config = replace(CONFIG, checkpoint_every_steps=3)
    trainer = JobTrainer(make_model("qwen2"), tokenizer, examples, config,
                         on_event=lambda kind, message, data: events.append((kind, message, data)),
                         checkpoint_dir=lambda step: str(tmp_path / f"step-{step}"))
    assert trainer.progress == (0, 4, 0, 0, None, 0.0)
    result = trainer.run(trainer.min_piece_units)
    assert result.pieces == 1 and not result.step_done
    result = trainer.run(10**12)  # crosses step boundaries, stops where a checkpoint is due
    assert result.step_done and not trainer.done and trainer.checkpoint_due
    assert trainer.progress.step == 3 and not os.listdir(tmp_path)  # nothing written inside run
    assert trainer.write_due_checkpoint() == str(tmp_path / "step-3")
    assert not trainer.checkpoint_due and trainer.write_due_checkpoint() is None
    result = trainer.run(10**12)  # to the end of the job
    assert result.step_done and trainer.done and result.pieces > 1
    assert trainer.min_piece_units == 0 and trainer.run(10**12).pieces == 0

    assert [e[0] for e in events] == ["step", "step", "epoch", "step", "checkpoint", "step",
                                      "epoch", "done"]
    steps = [data for kind, _, data in events if kind == "step"]
    assert [d["step"] for d in steps] == [1, 2, 3, 4]
    assert all(d["total_steps"] == 4 and math.isfinite(d["train_loss"]) and d["tokens_per_s"] > 0
               for d in steps)
    assert steps[-1]["trained_tokens"] == 2 * sum(len(e.input_ids) for e in examples)
    assert steps[-1]["train_loss"] == result.loss
    assert events[1][1].startswith("step 2/4: train loss ")
    assert [d["epoch"] for kind, _, d in events if kind == "epoch"] == [1, 2]
    assert all(0 <= d["train_mean_token_accuracy"] <= 1 for d in steps)
    assert "valid_loss" not in steps[0]  # no validation file, no validation metrics
    assert events[4][2] == {"step": 3, "path": str(tmp_path / "step-3"), "metrics": {
        "step": 3, "train_loss": steps[2]["train_loss"],
        "train_mean_token_accuracy": steps[2]["train_mean_token_accuracy"]}}
    assert events[-1][2]["step"] == 4
    progress = trainer.progress
    assert (progress.step, progress.total_steps, progress.epoch) == (4, 4, 2)
    assert progress.loss == result.loss and progress.trained_tokens == trainer.trained_tokens
    assert sorted(os.listdir(tmp_path)) == ["step-3"]  # no temporary directory left over


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_from_checkpoint_equals_uninterrupted_training(dropout, make_model, tokenizer,
                                                              random_examples, tmp_path):
    examples = random_examples(7, seed=3)
    config = replace(CONFIG, lora_dropout=dropout, checkpoint_every_steps=2)
    straight = JobTrainer(make_model("llama"), tokenizer, examples, config)
    drive(straight, seed=4)

    paths = []
    first = JobTrainer(make_model("llama"), tokenizer, examples, config,
                       checkpoint_dir=lambda step: paths.append(str(tmp_path / f"s{step}")) or
                       paths[-1])
    drive(first, seed=5, until_step=3)  # stops somewhere inside step 4: a crash mid-step
    assert first.completed_steps == 3 and paths == [str(tmp_path / "s2")]
    assert sorted(os.listdir(paths[0])) == sorted(
        ["adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "state.json"])
    state = json.load(open(os.path.join(paths[0], "state.json")))
    assert state["position"] == {"epoch": 0, "step": 2} and state["completed_steps"] == 2

    rng_before = torch.get_rng_state()
    resumed = JobTrainer.resume(paths[0], make_model("llama"), tokenizer, examples, config)
    assert (resumed.completed_steps, resumed.position) == (2, DataPosition(0, 2))
    assert resumed.trained_tokens == state["trained_tokens"]
    drive(resumed, seed=6)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the job's dropout RNG is private

    expected, actual = lora_weights(straight.peft_model), lora_weights(resumed.peft_model)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert resumed.trained_tokens == straight.trained_tokens
    assert resumed.last_loss == straight.last_loss


def test_resume_rejects_a_different_job(make_model, tokenizer, random_examples, tmp_path):
    examples = random_examples(4, seed=7)
    trainer = JobTrainer(make_model("llama"), tokenizer, examples, CONFIG)
    trainer.run(3 * trainer.min_piece_units)
    with pytest.raises(RuntimeError, match="middle of a step"):
        trainer.save_checkpoint(str(tmp_path / "ckpt"))
    result = trainer.run(trainer.remaining_step_units)  # exactly to the end of the step
    assert result.step_done and trainer.completed_steps == 1
    assert trainer.remaining_step_units == trainer._chunked.remaining_units > 0  # the next step
    trainer.save_checkpoint(str(tmp_path / "ckpt"))
    trainer.save_checkpoint(str(tmp_path / "ckpt"))  # overwriting a checkpoint is fine
    with pytest.raises(ValueError, match=r"config differs .*\['learning_rate'\]"):
        JobTrainer.resume(str(tmp_path / "ckpt"), make_model("llama"), tokenizer, examples,
                          replace(CONFIG, learning_rate=1e-2))
    with pytest.raises(ValueError, match="training examples differ"):
        JobTrainer.resume(str(tmp_path / "ckpt"), make_model("llama"), tokenizer, examples[:3],
                          CONFIG)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        JobTrainer.resume(str(tmp_path), make_model("llama"), tokenizer, examples, CONFIG)
    ok = JobTrainer.resume(str(tmp_path / "ckpt"), make_model("llama"), tokenizer, examples,
                           replace(CONFIG, checkpoint_every_steps=5))
    assert ok.completed_steps == 1


def test_saved_adapter_loads_with_peft(make_model, tokenizer, random_examples, tmp_path):
    trainer = JobTrainer(make_model("qwen2"), tokenizer, random_examples(3, seed=8), CONFIG)
    drive(trainer, seed=1)
    trainer.save_adapter(str(tmp_path / "adapter"))
    loaded = PeftModel.from_pretrained(make_model("qwen2"), str(tmp_path / "adapter"))
    expected = lora_weights(trainer.peft_model)
    actual = lora_weights(loaded)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(actual[n], expected[n]) for n in expected)
    ids = torch.tensor([[5, 6, 7, 8]])
    trainer.peft_model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, trainer.peft_model(input_ids=ids).logits)


def test_examples_are_checked(make_model, tokenizer, random_examples):
    with pytest.raises(ValueError, match="at least one training example"):
        JobTrainer(make_model("llama"), tokenizer, [], CONFIG)
    with pytest.raises(ValueError, match="example 0 is longer than max_seq_len"):
        JobTrainer(make_model("llama"), tokenizer, random_examples(1, min_len=40, max_len=40),
                   CONFIG)


@pytest.mark.parametrize("change, error", [
    ({"n_epochs": 0}, "n_epochs must be an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"micro_batch_size": 0}, "micro_batch_size must be an integer >= 1"),
    ({"micro_batch_size": 4}, r"micro_batch_size \(4\) must not exceed batch_size \(3\)"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0"),
    ({"lora_r": 0}, "lora_r must be an integer >= 1"),
    ({"lora_alpha": -1}, "lora_alpha must be a finite number > 0"),
    ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
    ({"target_modules": ()}, "target_modules must be a non-empty list"),
    ({"target_modules": "q_proj"}, "target_modules must be a non-empty list"),
    ({"target_modules": ("q_proj", "")}, "target_modules must be a non-empty list"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": True}, "seed must be an integer >= 0"),
    ({"max_seq_len": 1}, "max_seq_len must be an integer >= 2"),
    ({"checkpoint_every_steps": -1}, "checkpoint_every_steps must be an integer >= 0"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be None or a finite number > 0"),
])
def test_train_config_validation(change, error):
    with pytest.raises(ValueError, match=error):
        replace(CONFIG, **change)


def test_train_config_is_frozen_and_normalises_target_modules():
    config = replace(CONFIG, target_modules=["q_proj"], max_grad_norm=None)
    assert config.target_modules == ("q_proj",)
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]


def test_runs_without_sglang_or_zmq(tmp_path):
    # The engine-agnostic core must train on a machine that has neither: block
    # both (a None entry makes ``import`` fail) and run a whole job end to end.
    script = f"""
import sys
for name in ("sglang", "zmq", "sgl_kernel"):
    sys.modules[name] = None
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from harli_sgl.core.trainer.data import load_examples
from harli_sgl.core.trainer.job_trainer import JobTrainer, TrainConfig
from harli_sgl.model.byte_model import build_tokenizer
tok = build_tokenizer()
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
examples = load_examples('{{"prompt": "a", "completion": "b"}}\\n', tok, max_seq_len=16)
trainer = JobTrainer(model, tok, examples, TrainConfig(batch_size=1, micro_batch_size=1,
    checkpoint_every_steps=1), checkpoint_dir=lambda step: {str(tmp_path)!r} + f"/c{{step}}")
trainer.run(10**12)
assert trainer.write_due_checkpoint() is not None
trainer.save_adapter({str(tmp_path / "adapter")!r})
assert trainer.done
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert sorted(os.listdir(tmp_path)) == ["adapter", "c1"]


def hf_mean_loss(model, examples, pad_id) -> float:
    """HF's own mean token loss over ``examples`` in one forward, no dropout."""
    model.eval()
    with torch.no_grad():
        mb = collate(examples, pad_id)
        loss = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask,
                     labels=mb.labels).loss
    model.train()
    return float(loss)


def hf_accuracy(model, examples, pad_id) -> float:
    """OpenAI's mean token accuracy (argmax == label over supervised tokens), from HF."""
    model.eval()
    with torch.no_grad():
        mb = collate(examples, pad_id)
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    model.train()
    target = mb.labels[:, 1:]
    supervised = target != -100
    return ((logits[:, :-1].argmax(-1) == target) & supervised).sum().item() / supervised.sum().item()


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_validation_sample_every_interval_and_all_of_it_at_checkpoints_and_the_end(
        dropout, make_model, tokenizer, random_examples, tmp_path, monkeypatch):
    from harli_sgl.core.trainer import validation

    monkeypatch.setattr(validation, "SAMPLE_EXAMPLES", 2)  # the sample is 2 of the 5
    monkeypatch.setattr(validation, "SAMPLE_POINTS", 3)  # 6 steps: a sample every 2
    examples, valid = random_examples(7, seed=31), random_examples(5, seed=32)
    config = replace(CONFIG, lora_dropout=dropout, checkpoint_every_steps=3)
    plain = JobTrainer(make_model("llama"), tokenizer, examples, config)
    drive(plain, seed=1)

    events = []
    trainer = JobTrainer(make_model("llama"), tokenizer, examples, config,
                         validation_examples=valid,
                         on_event=lambda kind, msg, data: events.append((kind, data)),
                         checkpoint_dir=lambda step: str(tmp_path / f"s{step}"))
    rng = random.Random(2)
    while not trainer.done:
        trainer.run(rng.randint(0, 4 * trainer.min_piece_units))
        trainer.write_due_checkpoint()
    # Evaluating changes nothing about training, not even dropout's random draws.
    expected, actual = lora_weights(plain.peft_model), lora_weights(trainer.peft_model)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert trainer.trained_tokens == plain.trained_tokens

    steps = {d["step"]: d for k, d in events if k == "step"}
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]  # one event per step, validation in it
    assert [s for s, d in steps.items() if "valid_loss" in d] == [2, 3, 4, 6]
    assert [s for s, d in steps.items() if "full_valid_loss" in d] == [3, 6]  # checkpoint, end
    assert [steps[s]["valid_examples"] for s in (2, 3, 4, 6)] == [2, 5, 2, 5]
    assert steps[2]["valid_loss"] != steps[4]["valid_loss"]
    # The last evaluation is HF's mean loss and argmax accuracy of the trained model on all of it.
    last = steps[6]
    assert last["full_valid_loss"] == last["valid_loss"] == pytest.approx(
        hf_mean_loss(trainer.peft_model, valid, tokenizer.pad_token_id), rel=1e-5)
    assert last["full_valid_mean_token_accuracy"] == pytest.approx(
        hf_accuracy(trainer.peft_model, valid, tokenizer.pad_token_id), abs=1e-9)
    assert trainer.last_metrics == last
    kinds = [k for k, _ in events]
    assert kinds[-3:] == ["epoch", "done", "checkpoint"]  # done once the end is evaluated
    assert events[-2][1]["full_valid_loss"] == last["full_valid_loss"]
    checkpoint = next(d for k, d in events if k == "checkpoint")
    assert checkpoint["metrics"] == {k: v for k, v in steps[3].items() if k in (
        "step", "train_loss", "train_mean_token_accuracy", "valid_loss",
        "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")}


def test_evaluation_runs_in_forward_pieces_within_budgets(make_model, tokenizer, random_examples):
    examples, valid = random_examples(3, seed=41), random_examples(4, seed=42)
    config = replace(CONFIG, n_epochs=1)  # one step, then the full evaluation
    events = []
    trainer = JobTrainer(make_model("llama"), tokenizer, examples, config,
                         validation_examples=valid,
                         on_event=lambda kind, msg, data: events.append(kind))
    while trainer.completed_steps < 1:
        trainer.run(trainer.min_piece_units)
    assert trainer.eval_pending and not trainer.done and events == []  # the step's event waits
    layers = trainer.peft_model.get_base_model().config.num_hidden_layers
    # Only forward pieces (layers + head) of 2 micro-batches: one piece per call at most.
    pieces = trainer.upcoming_pieces(100)
    assert len(pieces) == 2 * (layers + 1)
    assert {p.kind.value for p in pieces} == {"forward", "head_forward"}
    calls = 0
    while not trainer.done:
        r = trainer.run(trainer.min_piece_units)
        assert r.pieces == 1 and r.trained_tokens == 0 and r.work.units_bwd == 0
        calls += 1
    assert calls == len(pieces) and "full_valid_loss" in trainer.last_metrics
    assert events == ["step", "epoch", "done"]


def test_resumed_job_reports_the_validation_metrics_of_an_uninterrupted_one(
        make_model, tokenizer, random_examples, tmp_path):
    examples, valid = random_examples(7, seed=51), random_examples(3, seed=52)
    config = replace(CONFIG, checkpoint_every_steps=3)

    def run(trainer, until_step=None):
        events = []
        trainer._on_event = lambda kind, msg, data: events.append((kind, data))
        while not trainer.done and (until_step is None or trainer.completed_steps < until_step
                                    or trainer.eval_pending):
            trainer.run(trainer.min_piece_units * 3)
            trainer.write_due_checkpoint()
        return {d["step"]: {k: v for k, v in d.items() if k != "tokens_per_s"}
                for k, d in events if k == "step"}

    straight = run(JobTrainer(make_model("llama"), tokenizer, examples, config,
                              validation_examples=valid,
                              checkpoint_dir=lambda step: str(tmp_path / f"a{step}")))
    first = JobTrainer(make_model("llama"), tokenizer, examples, config, validation_examples=valid,
                       checkpoint_dir=lambda step: str(tmp_path / f"b{step}"))
    before = run(first, until_step=4)  # the checkpoint at 3 is written, step 4 is evaluated
    resumed = JobTrainer.resume(str(tmp_path / "b3"), make_model("llama"), tokenizer, examples,
                                config, validation_examples=valid,
                                checkpoint_dir=lambda step: str(tmp_path / f"c{step}"))
    assert resumed.last_metrics["full_valid_loss"] == before[3]["full_valid_loss"]
    after = run(resumed)
    assert sorted(after) == [4, 5, 6] and all("valid_loss" in d for d in after.values())
    for step in range(4, 7):
        assert after[step] == pytest.approx(straight[step], rel=1e-6), step
    assert before[3] == pytest.approx(straight[3], rel=1e-6)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_non_finite_loss_stops_the_job_with_a_clear_error(bad, make_model, tokenizer,
                                                            random_examples):
    """A loss that is NaN or inf is refused, never reported as a step or trained further."""
    from harli_sgl.core.trainer.job_trainer import TrainingDiverged

    events = []
    model = make_model("llama")
    trainer = JobTrainer(model, tokenizer, random_examples(7, seed=8), CONFIG,
                         on_event=lambda kind, message, data: events.append(kind))
    drive(trainer, seed=9, until_step=2)
    done = trainer.completed_steps
    assert done >= 2 and events.count("step") == done
    with torch.no_grad():  # the run diverges: one logit row goes non-finite
        model.lm_head.weight[:, 0] = bad
    with pytest.raises(TrainingDiverged) as err:
        drive(trainer, seed=10)
    message = str(err.value)
    assert message.startswith(f"the training loss became nan at step {done + 1}/"
                              f"{trainer.total_steps}: training diverged (learning rate 0.001, "
                              "lora alpha 8, r 4"), message
    assert not trainer.done and events.count("step") == done


def test_a_token_bound_splits_micro_batches_and_learns_the_same(make_model, tokenizer,
                                                              random_examples):
    """``micro_batch_tokens`` bounds a micro-batch's padded tokens (its activations) and
    leaves the adapter as it was: the loss is normalised over the whole step."""
    examples = random_examples(7, seed=21)
    bound = max(len(e.input_ids) for e in examples)  # one example per micro-batch, mostly
    split = JobTrainer(make_model("llama"), tokenizer, examples, replace(CONFIG, micro_batch_tokens=bound))
    batches = split._micro_batches(DataPosition(0, 0))
    assert len(batches) == 3  # 3 examples, 2 per micro-batch without the bound
    assert all(mb.input_ids.numel() <= bound for mb in batches)
    whole = JobTrainer(make_model("llama"), tokenizer, examples, CONFIG)
    assert len(whole._micro_batches(DataPosition(0, 0))) == 2
    drive(split, seed=1)
    drive(whole, seed=1)
    expected, actual = lora_weights(whole.peft_model), lora_weights(split.peft_model)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)
