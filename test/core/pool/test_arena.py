"""Saved activations in leased KV memory: same gradients, data moved out on reclaim."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from harli_sgl.core.pool.arena import LeasedArena
from harli_sgl.core.trainer.chunked import ChunkedTrainer
from harli_sgl.core.trainer.data import IGNORE_INDEX, MicroBatch


def make_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                              "down_proj"]))
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return peft


def batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 120, (3, 24), generator=g)
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    return MicroBatch(ids, torch.ones_like(ids), labels)


def grads_after_step(hooks=None, reclaim_after_pieces=None, arena=None):
    model = make_model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)  # lr 0: compare gradients, weights stay put
    trainer = ChunkedTrainer(model, opt, saved_tensors_hooks=hooks)
    captured = {}
    for p in params:
        p.register_hook(lambda g, p=p: captured.setdefault(id(p), []).append(g.clone()))
    trainer.start_step([batch()])
    if reclaim_after_pieces is not None:
        trainer.run(sum(piece.units for piece in trainer.upcoming_pieces(reclaim_after_pieces)))
        moved = arena.reclaim(1)
        assert moved > 0 and arena.packed_bytes == 0
    trainer.run(10**12)
    return [sum(captured[id(p)]) for p in params]


def kv_buffers(pages=64, page_tokens=4):
    return [torch.zeros(pages * page_tokens + page_tokens, 2, 16) for _ in range(6)]


@pytest.mark.parametrize("ranges", [((1, 65),), ((1, 9), (20, 30), (40, 65))])
def test_gradients_with_the_pool_equal_gradients_without(ranges):
    reference = grads_after_step()
    arena = LeasedArena(kv_buffers(), page_tokens=4, min_pack_bytes=512)
    arena.add_lease(1, ranges)
    pooled = grads_after_step(arena.hooks())
    assert arena.peak_packed_bytes > 0, "activations were stored in the lease"
    for a, b in zip(reference, pooled):
        assert torch.equal(a, b)


def test_split_blocks_and_fallback_still_exact():
    reference = grads_after_step()
    # Tiny chunks force tensors to be split across chunks; a full lease forces fallback.
    arena = LeasedArena(kv_buffers(pages=6), page_tokens=4, min_pack_bytes=256)
    arena.add_lease(1, ((1, 7),))
    pooled = grads_after_step(arena.hooks())
    assert arena.peak_packed_bytes > 0 and arena.fallback_bytes > 0
    for a, b in zip(reference, pooled):
        assert torch.equal(a, b)


def test_reclaim_mid_micro_batch_moves_data_out_and_loses_nothing():
    reference = grads_after_step()
    arena = LeasedArena(kv_buffers(), page_tokens=4, min_pack_bytes=512)
    arena.add_lease(1, ((1, 65),))
    # After the forward pieces (3 layers + head) the lease holds every saved activation.
    pooled = grads_after_step(arena.hooks(), reclaim_after_pieces=4, arena=arena)
    assert arena.moved_bytes > 0 and 1 not in arena.chunks
    for a, b in zip(reference, pooled):
        assert torch.equal(a, b)


def test_parameters_and_small_tensors_are_never_packed():
    buffers = kv_buffers()
    weight = torch.randn(64, 64)
    arena = LeasedArena(buffers, page_tokens=4, exclude=[weight], min_pack_bytes=1024)
    arena.add_lease(1, ((1, 65),))
    assert arena.pack(weight) is weight
    transposed = weight.t()  # a view of an excluded storage (and not contiguous)
    assert arena.pack(transposed) is transposed
    leaf = torch.randn(64, 64, requires_grad=True)
    assert arena.pack(leaf) is leaf
    small = torch.randn(8)
    assert arena.pack(small) is small
    big = torch.randn(64, 64)
    block = arena.pack(big)
    assert block is not big and torch.equal(arena.unpack(block), big)
    del block
    assert arena.packed_bytes == 0  # chunk space is reclaimed when the block dies
