"""Tiny random Llama/Qwen2 models and training data shared by the trainer tests."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from harli_sgl.core.trainer.data import IGNORE_INDEX, Example
from harli_sgl.model.byte_model import build_tokenizer

VOCAB = 300
FAMILIES = ("llama", "qwen2")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The test machine has 2 cores shared with other work; one thread is also
    # what makes timings in the deadline test predictable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def _make_model(family: str, num_layers: int = 2, seed: int = 0) -> torch.nn.Module:
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, attn_implementation="sdpa"))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, attn_implementation="sdpa"))
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    else:
        raise ValueError(family)
    return model.to(torch.float32).eval()


@pytest.fixture
def make_model() -> Callable[..., torch.nn.Module]:
    return _make_model


def _random_examples(n: int, seed: int = 0, min_len: int = 4, max_len: int = 24) -> list[Example]:
    """Variable-length examples with a random prompt/answer split (answer supervised)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(1, VOCAB) for _ in range(length)]
        cut = rng.randint(1, length - 1)
        out.append(Example(ids, [IGNORE_INDEX] * cut + ids[cut:]))
    return out


@pytest.fixture
def random_examples() -> Callable[..., list[Example]]:
    return _random_examples
