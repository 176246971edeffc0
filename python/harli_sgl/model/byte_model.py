"""Random-weight Llamas with a byte-level tokenizer, built offline: the test models.

They know nothing (random weights), so they serve the tests whose subject is not
the model's knowledge: serving, scheduling, the pool, the job API, training
mechanics. They are fast to build and to run. The model a user meets is
SmolLM2 (:mod:`harli_sgl.model.smollm2`). Each is built deterministically
(fixed seed, fixed config) into ``$HARLI_CACHE_DIR/models/<name>-<hash>``
(:mod:`harli_sgl.model.cache`); the hash covers the config, the tokenizer spec
and the versions of torch and transformers that wrote it.

The tokenizer maps each byte to one token (256 ids) plus specials: ``<s> </s>
<unk> <pad>`` and the chat role markers ``<|system|> <|user|> <|assistant|>``.
The chat template renders ``<|role|>content</s>`` per message and ends with
``<|assistant|>`` when a generation prompt is asked for, so an assistant turn
is terminated by EOS and generation stops there.

Sizes (see README for the measurements that chose them): ``small``
(``byte-llama-random``) is sized so that a decode iteration on a 2-core CPU is
dominated by model compute rather than SGLang's per-iteration Python work; it
is what the end-to-end tests serve. ``tiny`` (``byte-llama-tiny-random``) is
for fast unit tests.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from harli_sgl.model import cache

SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
SEED = 20251114


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False


SPECS = {
    "small": ModelSpec("byte-llama-random", hidden_size=512, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, intermediate_size=1536),
    "tiny": ModelSpec("byte-llama-tiny-random", hidden_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=256),
}


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte <-> printable-unicode table that ByteLevel pre-tokenizers use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=list(SPECIAL_TOKENS[4:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _fingerprint(spec: ModelSpec) -> str:
    import torch
    import transformers

    return cache.key_of({"spec": asdict(spec), "special": SPECIAL_TOKENS,
                         "template": CHAT_TEMPLATE, "seed": SEED, "torch": torch.__version__,
                         "transformers": transformers.__version__})


def model_dir(size: str = "small") -> str:
    spec = SPECS[size]
    return cache.model_dir(spec.name, _fingerprint(spec))


def _write(spec: ModelSpec, out: str) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure(size: str = "small") -> str:
    """Build the model once (process-safe) and return its directory."""
    return cache.build_once(model_dir(size), lambda out: _write(SPECS[size], out))


def server_flags(size: str = "small") -> list[str]:
    """``launch_server`` flags that serve this model under its name (the default is SmolLM2)."""
    return ["--model-path", ensure(size), "--served-model-name", SPECS[size].name]


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a random-weight byte-level test model.")
    parser.add_argument("--ensure", action="store_true")
    parser.add_argument("--size", choices=sorted(SPECS), default="small")
    args = parser.parse_args()
    path = ensure(args.size) if args.ensure else model_dir(args.size)
    print(path)


if __name__ == "__main__":
    main()
