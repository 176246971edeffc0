from __future__ import annotations

import random
import time

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import MistralConfig, MistralForCausalLM

from harli_sgl.core.iteration import NO_SLOT
from harli_sgl.core.trainer.chunked import ChunkedTrainer, PieceKind
from harli_sgl.core.trainer.data import IGNORE_INDEX, Example, collate

ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EVERYWHERE = ATTN_MLP + ["embed_tokens", "lm_head"]
PAD = 0


def lora(base: torch.nn.Module, targets: list[str], dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                            target_modules=targets, task_type="CAUSAL_LM"))
    return model.train()


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_plain(model, steps: list[list[Example]], lr: float, clip: float | None) -> list[float]:
    """The reference: HF forward over the whole batch, mean loss, one optimizer step."""
    opt = torch.optim.AdamW(trainable(model), lr=lr)
    losses = []
    torch.manual_seed(7)  # dropout masks
    for batch in steps:
        mb = collate(batch, PAD)
        out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, labels=mb.labels)
        out.loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable(model), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    return losses


def train_chunked(model, steps: list[list[Example]], lr: float, clip: float | None,
                  micro_batch_size: int, budget_seed: int, hooks=None) -> tuple[list[float], set]:
    """Random budgets cut the steps at many different piece boundaries.

    Returns the step losses and the set of ``(pieces run, position stopped at)``
    of the calls, to show how varied the cuts were.
    """
    trainer = ChunkedTrainer(model, torch.optim.AdamW(trainable(model), lr=lr),
                             max_grad_norm=clip, saved_tensors_hooks=hooks)
    rng = random.Random(budget_seed)
    losses, cuts = [], set()
    torch.manual_seed(7)
    for batch in steps:
        trainer.start_step([collate(batch[i:i + micro_batch_size], PAD)
                            for i in range(0, len(batch), micro_batch_size)])
        while not trainer.idle:
            result = trainer.run(rng.randint(0, 3 * trainer.min_piece_units))
            cuts.add((result.pieces, None if trainer.idle else trainer._step.position))
            if result.step_done:
                losses.append(result.loss)
    return losses, cuts


def batches(random_examples, n_steps: int, batch_size: int) -> list[list[Example]]:
    examples = random_examples(n_steps * batch_size, seed=11)
    return [examples[i * batch_size:(i + 1) * batch_size] for i in range(n_steps)]


def perturb_lora_b(model: torch.nn.Module) -> None:
    """LoRA starts with B = 0, where A gets no gradient; give B values so both are tested.

    (PEFT's embedding LoRA is initialised the other way round: A = 0.)
    """
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


FAMILIES_X_TARGETS = pytest.mark.parametrize("family, targets, clip", [
    ("llama", ATTN_MLP, None), ("qwen2", ATTN_MLP, None),
    ("llama", EVERYWHERE, 0.05), ("qwen2", EVERYWHERE, 0.05)])


@FAMILIES_X_TARGETS
def test_step_gradient_equals_full_batch_gradient(family, targets, clip, make_model,
                                                  random_examples):
    batch = random_examples(5, seed=11)  # lengths 4..24: every micro-batch is padded
    ref = lora(make_model(family, num_layers=3), targets)
    perturb_lora_b(ref)
    mb = collate(batch, PAD)
    ref(input_ids=mb.input_ids, attention_mask=mb.attention_mask, labels=mb.labels).loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(trainable(ref), clip)
    expected = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}

    got = lora(make_model(family, num_layers=3), targets)
    perturb_lora_b(got)
    names = {p: n for n, p in got.named_parameters()}
    optimizer = torch.optim.SGD(trainable(got), lr=0.0)
    seen: dict[str, torch.Tensor] = {}
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.update({names[p]: p.grad.clone() for p in trainable(got)}))
    trainer = ChunkedTrainer(got, optimizer, max_grad_norm=clip)
    trainer.start_step([collate(batch[i:i + 2], PAD) for i in range(0, 5, 2)])
    assert trainer.run(10**12).step_done
    assert seen.keys() == expected.keys()
    assert all(g.abs().max() > 0 for g in expected.values())
    for name in expected:  # measured: max abs error 3e-8 at gradient scale 1e-2..1e-1
        torch.testing.assert_close(seen[name], expected[name], rtol=1e-5, atol=2e-7)


@FAMILIES_X_TARGETS
def test_matches_plain_peft_training_with_accumulation(family, targets, clip, make_model,
                                                       random_examples):
    steps = batches(random_examples, n_steps=3, batch_size=5)
    ref = lora(make_model(family, num_layers=3), targets)
    ref_losses = train_plain(ref, steps, lr=1e-3, clip=clip)
    got = lora(make_model(family, num_layers=3), targets)
    losses, cuts = train_chunked(got, steps, lr=1e-3, clip=clip, micro_batch_size=2,
                                 budget_seed=3)
    assert {position for _, position in cuts} >= set(range(2 * 3 + 2))  # cut at every boundary
    assert {pieces for pieces, _ in cuts} >= {0, 1, 2}
    assert losses == pytest.approx(ref_losses, rel=1e-6)
    expected, actual = weights(ref), weights(got)
    assert expected.keys() == actual.keys()
    assert any("lora_B" in n and w.abs().max() > 1e-3 for n, w in actual.items())  # it trained
    # Adam moves every element by about lr per step whatever its gradient's size,
    # so rounding noise in near-zero gradients shows up as ~1e-3 * lr absolute;
    # measured max abs difference: 3.5e-7.
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_bitwise_equal_to_plain_peft_without_accumulation(family, make_model, random_examples):
    # One micro-batch per step runs exactly HF's kernels on exactly HF's shapes,
    # dropout masks included, so no rounding difference is allowed at all.
    steps = batches(random_examples, n_steps=3, batch_size=4)
    ref = lora(make_model(family), EVERYWHERE, dropout=0.1)
    ref_losses = train_plain(ref, steps, lr=1e-2, clip=None)
    got = lora(make_model(family), EVERYWHERE, dropout=0.1)
    losses, _ = train_chunked(got, steps, lr=1e-2, clip=None, micro_batch_size=4, budget_seed=5)
    assert losses == ref_losses
    expected, actual = weights(ref), weights(got)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_saved_tensors_hooks_see_every_saved_activation(make_model, random_examples):
    steps = batches(random_examples, n_steps=2, batch_size=4)
    plain = lora(make_model("qwen2"), ATTN_MLP)
    train_chunked(plain, steps, lr=1e-2, clip=None, micro_batch_size=2, budget_seed=1)
    packed: list[int] = []

    def pack(t: torch.Tensor) -> dict:
        packed.append(t.numel())
        return {"copy": t.detach().clone()}  # stored elsewhere, as a pool would

    def unpack(box: dict) -> torch.Tensor:
        return box.pop("copy")

    hooked = lora(make_model("qwen2"), ATTN_MLP)
    train_chunked(hooked, steps, lr=1e-2, clip=None, micro_batch_size=2, budget_seed=1,
                  hooks=(pack, unpack))
    assert len(packed) > 100
    for name, w in weights(plain).items():
        assert torch.equal(weights(hooked)[name], w), name


def make_trainer(make_model, family="llama", num_layers=2, **kwargs) -> ChunkedTrainer:
    model = lora(make_model(family, num_layers=num_layers), ATTN_MLP)
    return ChunkedTrainer(model, torch.optim.AdamW(trainable(model), lr=1e-3), **kwargs)


def test_pieces_units_and_tokens_are_exact(make_model, random_examples):
    trainer = make_trainer(make_model, num_layers=3)
    examples = random_examples(5, seed=3)
    mbs = [collate(examples[:2], PAD), collate(examples[2:], PAD)]
    padded = [mb.input_ids.numel() for mb in mbs]
    real = [int(mb.attention_mask.sum()) for mb in mbs]
    assert padded != real  # padding is present and excluded from tokens
    trainer.start_step(mbs)
    assert trainer.remaining_units == sum(3 * (3 + 1) * t for t in padded)
    expected = []
    for t in padded:
        expected += [(PieceKind.FORWARD, i, t) for i in range(3)]
        expected += [(PieceKind.HEAD_FORWARD, -1, t), (PieceKind.HEAD_BACKWARD, -1, 2 * t)]
        expected += [(PieceKind.BACKWARD, i, 2 * t) for i in (2, 1, 0)]
    # upcoming_pieces() announces exactly the pieces run() will execute next.
    assert [tuple(p) for p in trainer.upcoming_pieces(100)] == expected
    seen = []
    for m, t in enumerate(padded):
        for k in range(8):
            piece = trainer._step.next_piece()
            assert trainer.upcoming_pieces(1) == [piece]
            seen.append(tuple(piece))
            assert trainer.min_piece_units == piece.units
            before = trainer.remaining_units
            # Activations are held from a micro-batch's first piece until its last.
            assert trainer.holds_activations == (k > 0)
            assert trainer.units_to_release == (0 if k == 0 else sum(
                units for _, _, units in expected[8 * m + k:8 * m + 8]))
            result = trainer.run(piece.units)  # exactly one piece fits
            assert (result.units, result.pieces) == (piece.units, 1)
            head = piece.kind in (PieceKind.HEAD_FORWARD, PieceKind.HEAD_BACKWARD)
            assert result.work.units_bwd == (piece.units if piece.kind is PieceKind.BACKWARD else 0)
            assert result.work.units_head == (piece.units if head else 0)
            assert result.tokens == real[m]
            last_of_mb = k == 7
            assert result.trained_tokens == (real[m] if last_of_mb else 0)
            assert result.step_done == (last_of_mb and m == 1)
            assert trainer.remaining_units == before - piece.units
    assert seen == expected
    assert trainer.idle and trainer.min_piece_units == 0 and trainer.remaining_units == 0
    assert not trainer.holds_activations and trainer.units_to_release == 0


def test_whole_step_in_one_call(make_model, random_examples):
    trainer = make_trainer(make_model)
    examples = random_examples(4, seed=4)
    mbs = [collate(examples[:3], PAD), collate(examples[3:], PAD)]
    trainer.start_step(mbs)
    result = trainer.run(10**12)
    assert result.step_done and result.loss > 0
    assert result.units == sum(3 * 3 * mb.input_ids.numel() for mb in mbs)
    assert result.pieces == 2 * 6
    assert result.tokens == result.trained_tokens == sum(len(e.input_ids) for e in examples)
    assert trainer.idle
    assert all(p.grad is None for p in trainer._params)  # zero_grad(set_to_none=True)
    assert trainer.run(10**12) == (NO_SLOT, 0, 0, False, None, None)  # idle: nothing to do


def test_budget_below_the_next_piece_runs_nothing(make_model, random_examples):
    trainer = make_trainer(make_model)
    trainer.start_step([collate(random_examples(2, seed=5), PAD)])
    trainer.run(trainer.min_piece_units * 2)  # two forward pieces
    need = trainer.min_piece_units
    assert need > 0
    before = weights(trainer.stack.causal_lm)
    assert trainer.run(need - 1) == (NO_SLOT, 0, 0, False, None, None)
    assert trainer.run(0).pieces == 0
    assert trainer.min_piece_units == need
    result = trainer.run(need + need // 2)  # one piece fits, two do not
    assert result.pieces == 1 and result.units == need
    assert all(torch.equal(before[n], w) for n, w in weights(trainer.stack.causal_lm).items())
    with pytest.raises(ValueError):
        trainer.run(-1)


def test_deadline_is_checked_before_every_piece(make_model, random_examples):
    sleeps = []

    def slow_pack(t: torch.Tensor) -> torch.Tensor:
        if not sleeps:  # the first piece overruns the deadline
            sleeps.append(1)
            time.sleep(0.05)
        return t

    trainer = make_trainer(make_model, saved_tensors_hooks=(slow_pack, lambda t: t))
    trainer.start_step([collate(random_examples(2, seed=6), PAD)])
    assert trainer.run(10**12, deadline=time.perf_counter() - 1.0).pieces == 0
    result = trainer.run(10**12, deadline=time.perf_counter() + 0.01)
    assert result.pieces == 1  # started before the deadline, so it completed; then stopped
    result = trainer.run(10**12, deadline=time.perf_counter() + 60.0)
    assert result.step_done


def test_only_boundary_tensors_are_kept_between_pieces(make_model, random_examples):
    trainer = make_trainer(make_model, num_layers=3)
    trainer.start_step([collate(random_examples(2, seed=7), PAD)] * 2)
    live = []
    while not trainer.idle:
        trainer.run(trainer.min_piece_units)
        state = trainer._step.state if trainer._step is not None else None
        live.append(None if state is None else (sorted(state.inputs), sorted(state.outputs),
                                                state.loss is not None, state.grad is not None))
    one_mb = [
        ([0], [0], False, False), ([0, 1], [0, 1], False, False),
        ([0, 1, 2], [0, 1, 2], False, False), ([0, 1, 2, 3], [0, 1, 2], True, False),
        ([0, 1, 2], [0, 1, 2], False, True), ([0, 1], [0, 1], False, True),
        ([0], [0], False, True), None,  # the finished micro-batch is dropped entirely
    ]
    assert live == one_mb * 2


def test_start_abort_and_bad_steps(make_model, random_examples):
    trainer = make_trainer(make_model)
    mb = collate(random_examples(2, seed=8), PAD)
    with pytest.raises(ValueError, match="at least one micro-batch"):
        trainer.start_step([])
    # The only label sits at position 0, which the causal shift drops.
    unsupervised = collate([Example([1, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]),
                            Example([4, 5], [4, IGNORE_INDEX])], PAD)
    with pytest.raises(ValueError, match="supervised token"):
        trainer.start_step([unsupervised])
    trainer.start_step([mb])
    assert not trainer.mid_step
    with pytest.raises(RuntimeError, match="already in flight"):
        trainer.start_step([mb])
    trainer.run(7 * trainer.min_piece_units)  # through the backward of layer 1
    assert trainer.mid_step and any(p.grad is not None for p in trainer._params)
    trainer.abort_step()
    assert trainer.idle and not trainer.mid_step
    assert all(p.grad is None for p in trainer._params)
    trainer.start_step([mb])
    assert trainer.run(10**12).step_done


def test_unsupported_families_are_refused():
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2)
    model = lora(MistralForCausalLM(config), ["q_proj"])
    with pytest.raises(TypeError, match="'mistral' is not supported"):
        ChunkedTrainer(model, torch.optim.AdamW(trainable(model)))


def test_bf16_serving_weights_train_with_fp32_lora_and_optimizer_state_under_autocast(make_model):
    """The GPU path's precision (core/gpu/precision.py), run on the CPU: the base is bf16
    (as served), PEFT keeps the adapter in fp32, AdamW's state follows it, and the
    forward pieces autocast to bf16."""
    from harli_sgl.core.trainer import lora as lora_layers
    from harli_sgl.core.trainer.config import TrainConfig

    base = make_model("llama").to(torch.bfloat16)
    peft_model, _ = lora_layers.wrap_in_place(base, TrainConfig(lora_r=4, lora_alpha=8,
                                                                target_modules=("q_proj", "v_proj")))
    params = trainable(peft_model)
    assert params and all(p.dtype == torch.float32 for p in params)
    assert all(p.dtype == torch.bfloat16 for p in peft_model.parameters() if not p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-3)
    trainer = ChunkedTrainer(peft_model, opt, autocast_dtype=torch.bfloat16)
    rng = random.Random(0)
    batch = [Example(ids, [IGNORE_INDEX] + ids[1:]) for ids in
             ([rng.randrange(1, 300) for _ in range(12)] for _ in range(2))]
    before = weights(peft_model)
    trainer.start_step([collate(batch, PAD)])
    seen: list[torch.dtype] = []
    # The adapter's own matmul: fp32 weights, computed in bf16 only under autocast.
    hook = peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"] \
        .register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    while not trainer.idle:
        trainer.run(budget_units=1 << 20)
    hook.remove()
    assert seen == [torch.bfloat16]
    after = weights(peft_model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]
    assert state and all(t.dtype == torch.float32 for t in state)


def hf_token_accuracy(model, batch: list[Example]) -> float:
    """Mean token accuracy as OpenAI defines it, from one HF forward of the whole batch."""
    mb = collate(batch, PAD)
    with torch.no_grad():
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    target = mb.labels[:, 1:]
    supervised = target != IGNORE_INDEX
    hits = (logits[:, :-1].argmax(-1) == target) & supervised
    return hits.sum().item() / supervised.sum().item()


@pytest.mark.parametrize("evaluate", [False, True])
def test_mean_token_accuracy_equals_hf_argmax_accuracy(evaluate, make_model, random_examples):
    batch = random_examples(5, seed=13)
    model = lora(make_model("llama", num_layers=2), ATTN_MLP)
    train_plain(model, [batch] * 40, lr=3e-2, clip=None)  # a random model predicts nothing
    model.eval()  # no dropout anyway; the reference sees the weights before the update
    expected = hf_token_accuracy(model, batch)
    model.train()
    trainer = ChunkedTrainer(model, torch.optim.SGD(trainable(model), lr=0.0))
    trainer.start_step([collate(batch[i:i + 2], PAD) for i in range(0, 5, 2)], evaluate=evaluate)
    result = trainer.run(10**12)
    assert result.step_done and 0 < expected < 1
    assert result.accuracy == pytest.approx(expected, abs=1e-12)
