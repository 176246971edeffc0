"""HF views over engine-fused tensors compute exactly what the HF model computes, zero-copy."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from harli_sgl.core.shared_weights import build_model, fuse, hf_views, private_bytes


@pytest.mark.parametrize("config_cls", [LlamaConfig, Qwen2Config])
def test_views_reproduce_the_hf_model_without_copies(config_cls):
    cfg = config_cls(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    fused = fuse(ref.state_dict(), cfg)
    assert fused["model.embed_tokens.weight"].shape[0] == 128  # padded like the engine
    if config_cls is Qwen2Config:
        assert "model.layers.0.self_attn.qkv_proj.bias" in fused
    for t in fused.values():
        t.share_memory_()
    model = build_model(cfg, fused)
    x = torch.randint(0, 100, (2, 11))
    with torch.no_grad():
        assert torch.allclose(model(x).logits, ref(x).logits, atol=1e-6)
    # Every parameter is a view into a fused tensor's storage: nothing was copied.
    storages = {t.untyped_storage().data_ptr() for t in fused.values()}
    assert all(p.untyped_storage().data_ptr() in storages for p in model.parameters())
    assert private_bytes(model) == 0


def test_mismatched_shapes_and_families_are_refused():
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    fused = fuse(AutoModelForCausalLM.from_config(cfg).state_dict(), cfg)
    fused["model.layers.0.mlp.gate_up_proj.weight"] = fused["model.layers.0.mlp.gate_up_proj.weight"][:10]
    with pytest.raises(ValueError, match="gate_up_proj"):
        hf_views(fused, cfg)
    cfg.model_type = "gpt2"
    with pytest.raises(ValueError, match="supports"):
        hf_views(fused, cfg)


def test_segments_name_the_shared_memory_under_each_storage_once():
    from harli_sgl.core.shared_weights import shm_segments

    a, b = torch.zeros(1000), torch.zeros(3000)
    a.share_memory_()
    b.share_memory_()
    private = torch.zeros(10)
    seg = shm_segments([a, a[10:20], b, private])  # a view adds nothing: same storage
    shared = {k: v for k, v in seg.items() if k != "private"}
    assert len(shared) == 2 and sorted(shared.values()) == [4000, 12000]
    assert seg["private"] == 40
    # The segment of a tensor rebuilt from the same storage (what another process maps).
    again = torch.empty(0).set_(a.untyped_storage())
    assert set(shm_segments([again])) == {k for k, v in shared.items() if v == 4000}


def test_frozen_parameters_off_the_cpu_are_unknown_not_zero():
    model = torch.nn.Linear(4, 4)
    for p in model.parameters():
        p.requires_grad_(False)
    model.to("meta")
    assert private_bytes(model) is None
