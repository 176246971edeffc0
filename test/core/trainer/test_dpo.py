"""Layer-chunked DPO against a plain HF+PEFT DPO loss written here: same loss, same LoRA grads."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from harli_sgl.core.trainer.data import IGNORE_INDEX, Example
from harli_sgl.core.trainer.dpo import DpoChunkedTrainer
from harli_sgl.core.trainer.preference import PreferenceExample, collate_pairs

from .conftest import FAMILIES, VOCAB

PAD = 0
BETA = 0.5


def lora_model(base: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "v_proj", "o_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    # LoRA starts as a no-op (B = 0); move it so policy and reference differ and A gets grads.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.train()


def random_pairs(n: int, seed: int) -> list[PreferenceExample]:
    """Pairs sharing a prompt, with answers of different lengths (so rows are padded)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = [rng.randrange(1, VOCAB) for _ in range(rng.randint(2, 10))]
        answers = []
        for _ in range(2):
            answer = [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 12))]
            answers.append(Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
        pairs.append(PreferenceExample(*answers))
    return pairs


def plain_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-prob of each row's answer tokens, written out token by token."""
    logprobs = logits.float().log_softmax(-1)
    rows = []
    for b in range(labels.shape[0]):
        total = logits.new_zeros((), dtype=torch.float32)
        for t in range(1, labels.shape[1]):
            if labels[b, t] != IGNORE_INDEX:
                total = total + logprobs[b, t - 1, labels[b, t]]
        rows.append(total)
    return torch.stack(rows)


def plain_dpo(model, pairs: list[PreferenceExample], beta: float):
    """The reference: HF+PEFT forward of the whole batch, reference with the adapter off."""
    mb = collate_pairs(pairs, PAD)
    with torch.no_grad(), model.disable_adapter():
        ref = plain_logps(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits,
                          mb.labels)
    pol = plain_logps(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits,
                      mb.labels)
    k = len(pairs)
    margin = (pol[:k] - ref[:k]) - (pol[k:] - ref[k:])
    loss = -F.logsigmoid(beta * margin).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), ref, grads


def run_out(trainer: DpoChunkedTrainer, rng: random.Random):
    """Run the step in flight to its end under random budgets (always at least one piece)."""
    result = None
    while not trainer.idle:
        result = trainer.run(trainer.min_piece_units + rng.randrange(0, 400))
    return result


def chunked_dpo(model, pairs: list[PreferenceExample], beta: float, micro_batch_size: int,
                seed: int):
    params = [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(params, lr=1e-3)
    grads = {}
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.update(
        {names[id(p)]: p.grad.clone() for p in params}))
    trainer = DpoChunkedTrainer(model, optimizer, beta=beta)
    mbs = [collate_pairs(pairs[k:k + micro_batch_size], PAD)
           for k in range(0, len(pairs), micro_batch_size)]
    rng = random.Random(seed)
    trainer.start_reference(mbs)
    run_out(trainer, rng)
    refs = trainer.take_reference()
    trainer.start_step(mbs, references=refs)
    result = run_out(trainer, rng)
    return result.loss, refs, grads, trainer.last_metrics


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("micro_batch_size", [1, 2, 5])
def test_one_chunked_dpo_step_has_the_plain_loss_and_lora_grads(make_model, family,
                                                                 micro_batch_size):
    pairs = random_pairs(5, seed=3)
    model = lora_model(make_model(family))
    want_loss, want_ref, want = plain_dpo(model, pairs, BETA)
    loss, refs, got, metrics = chunked_dpo(model, pairs, BETA, micro_batch_size, seed=11)

    # Reference rows come per micro-batch as [preferred..., non-preferred...].
    k = len(pairs)
    order = []
    for start in range(0, k, micro_batch_size):
        n = min(micro_batch_size, k - start)
        order += list(range(start, start + n)) + list(range(k + start, k + start + n))
    torch.testing.assert_close(torch.cat(refs), want_ref[order], rtol=1e-5, atol=1e-5)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert metrics.loss == pytest.approx(want_loss, rel=1e-5)
    assert set(got) == set(want) and len(got) > 0
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().max() > 1e-4 for g in want.values())


def test_metrics_are_the_rewards_of_the_step(make_model):
    pairs = random_pairs(4, seed=5)
    model = lora_model(make_model("llama"))
    mb = collate_pairs(pairs, PAD)
    with torch.no_grad():
        with model.disable_adapter():
            ref = plain_logps(model(input_ids=mb.input_ids,
                                    attention_mask=mb.attention_mask).logits, mb.labels)
        pol = plain_logps(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits,
                          mb.labels)
    chosen, rejected = BETA * (pol[:4] - ref[:4]), BETA * (pol[4:] - ref[4:])
    _, _, _, m = chunked_dpo(model, pairs, BETA, micro_batch_size=3, seed=2)
    assert m.chosen_reward == pytest.approx(chosen.mean().item(), rel=1e-4, abs=1e-6)
    assert m.rejected_reward == pytest.approx(rejected.mean().item(), rel=1e-4, abs=1e-6)
    assert m.reward_margin == pytest.approx(m.chosen_reward - m.rejected_reward)
    assert m.reward_accuracy == pytest.approx((chosen > rejected).float().mean().item())


def test_the_reference_pass_leaves_the_adapter_on_and_trainable(make_model):
    pairs = random_pairs(3, seed=1)
    model = lora_model(make_model("qwen2"))
    mb = collate_pairs(pairs, PAD)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        before = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    trainer = DpoChunkedTrainer(model, torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3), beta=BETA)
    trainer.start_reference([mb])
    run_out(trainer, random.Random(0))
    trainer.take_reference()
    with torch.no_grad():
        after = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_a_step_needs_references_for_every_row(make_model):
    model = lora_model(make_model("llama"))
    trainer = DpoChunkedTrainer(model, torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3), beta=BETA)
    mb = collate_pairs(random_pairs(2, seed=0), PAD)
    with pytest.raises(ValueError, match="one reference log-prob per row"):
        trainer.start_step([mb], references=[torch.zeros(3)])
    with pytest.raises(ValueError, match="even number of rows"):
        trainer.start_reference([mb._replace(input_ids=mb.input_ids[:3])])
    with pytest.raises(ValueError, match="beta must be > 0"):
        DpoChunkedTrainer(model, trainer.optimizer, beta=0.0)
