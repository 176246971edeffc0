"""Clients talk to harli_sgl exactly as they talk to SGLang (real server, real clients)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import requests
import sglang as sgl

from conftest import API_KEY
from e2e_util import generate

PROMPT = "The quick brown fox"


def test_generate_non_streaming(harli_server):
    out = generate(harli_server, PROMPT, max_new_tokens=12)
    assert out["meta_info"]["completion_tokens"] == 12
    assert len(out["output_ids"]) == 12
    assert isinstance(out["text"], str)


def test_generate_streaming(harli_server):
    r = requests.post(harli_server.base_url + "/generate", headers=harli_server.headers, stream=True,
                      timeout=120, json={"text": PROMPT, "stream": True, "sampling_params": {
                          "max_new_tokens": 10, "temperature": 0, "ignore_eos": True}})
    r.raise_for_status()
    chunks = []
    for line in r.iter_lines():
        if not line:
            continue
        assert line.startswith(b"data: ")
        if line == b"data: [DONE]":
            break
        chunks.append(json.loads(line[len(b"data: "):]))
    assert len(chunks) >= 2, "a streamed response arrives in several chunks"
    assert chunks[-1]["meta_info"]["completion_tokens"] == 10
    # The stream ends with the same tokens a non-streaming request returns.
    assert chunks[-1]["output_ids"][-10:] == generate(harli_server, PROMPT, 10)["output_ids"]


def test_openai_completions_and_chat(harli_server, model_path):
    client = openai.OpenAI(base_url=harli_server.base_url + "/v1", api_key=API_KEY)
    comp = client.completions.create(model=model_path, prompt=PROMPT, max_tokens=8, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert comp.usage.completion_tokens == 8
    assert isinstance(comp.choices[0].text, str)
    chat = client.chat.completions.create(
        model=model_path, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8,
        temperature=0, extra_body={"ignore_eos": True})
    assert chat.usage.completion_tokens == 8
    assert chat.choices[0].message.role == "assistant"
    # Streaming chat through the same client.
    pieces = list(client.chat.completions.create(
        model=model_path, messages=[{"role": "user", "content": "Say hi"}], max_tokens=6,
        temperature=0, stream=True, extra_body={"ignore_eos": True}))
    assert len(pieces) >= 2


def test_the_base_model_answers_to_its_name_its_path_and_default(harli_server, model_path):
    """SGLang's own tests and many clients send model="default" (issue 19, item 15)."""
    client = openai.OpenAI(base_url=harli_server.base_url + "/v1", api_key=API_KEY)

    def first_logprob(model: str) -> float:
        r = client.completions.create(model=model, prompt=PROMPT, max_tokens=1, temperature=0,
                                      logprobs=1)
        return r.choices[0].logprobs.token_logprobs[0]

    base = first_logprob(model_path)
    served = client.models.list().data[0].id
    assert first_logprob("default") == first_logprob(served) == base
    for unknown in ("defaults", "gpt-4o", "default:nothing"):
        try:
            first_logprob(unknown)
            raise AssertionError(f"{unknown} was served")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found"


def test_token_ids_outside_the_vocabulary_are_refused_and_the_server_keeps_serving(
        harli_server, model_path):
    # Stock SGLang 0.5.23 sends such ids to the embedding, where IndexError kills the
    # scheduler and with it the server.
    with open(os.path.join(model_path, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    url = harli_server.base_url
    for ids in ([1, 2, vocab], [[1, 2], [3, -1]]):
        r = requests.post(url + "/generate", headers=harli_server.headers, timeout=60,
                          json={"input_ids": ids, "sampling_params": {"max_new_tokens": 4}})
        assert r.status_code == 400, r.text
        assert "outside the model's vocabulary" in r.json()["error"]["message"]
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY)
    try:
        client.completions.create(model=model_path, prompt=[1, vocab + 5], max_tokens=4)
        raise AssertionError("an out-of-vocabulary prompt was served")
    except openai.BadRequestError as e:
        assert str(vocab + 5) in str(e)
    out = requests.post(url + "/generate", headers=harli_server.headers, timeout=60, json={
        "input_ids": [1, 2, vocab - 1], "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}})
    assert out.status_code == 200 and len(out.json()["output_ids"]) == 4


def test_an_unknown_adapter_is_one_clear_404_and_no_traceback(harli_server, model_path):
    """Every route answers 404 model_not_found, and the log holds no asyncio traceback.

    SGLang releases a failed request's adapters even when it never acquired them; its
    registry then raised TypeError in a task whose traceback reached the log once per
    request (seen on /generate with an unknown lora_path, single, batch and stream).
    """
    url, headers = harli_server.base_url, harli_server.headers
    with open(harli_server.log_path, "rb") as f:
        start = f.seek(0, os.SEEK_END)
    missing = "ft-never-trained"
    for body in ({"text": "hi", "lora_path": missing},
                 {"text": ["hi", "yo"], "lora_path": [missing, None]},
                 {"text": "hi", "lora_path": missing, "stream": True}):
        r = requests.post(url + "/generate", headers=headers, timeout=60,
                          json={**body, "sampling_params": {"max_new_tokens": 2}})
        # Streamed too: a refusal inside a 200 stream reads as success to a client.
        assert missing in r.text and r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "model_not_found", r.text
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY)
    for model in (missing, f"{model_path}:{missing}"):
        try:
            client.completions.create(model=model, prompt=PROMPT, max_tokens=2)
            raise AssertionError(f"{model} was served")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found", e.body
    # Still serving, and the refusals left no traceback behind.
    assert generate(harli_server, PROMPT, 2)["meta_info"]["completion_tokens"] == 2
    with open(harli_server.log_path, "rb") as f:
        f.seek(start)
        log = f.read().decode(errors="replace")
    assert missing in log  # the log is being read: SGLang's one line per /generate refusal
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


def test_openai_rejects_missing_api_key(harli_server, model_path):
    client = openai.OpenAI(base_url=harli_server.base_url + "/v1", api_key="wrong-key")
    try:
        client.completions.create(model=model_path, prompt=PROMPT, max_tokens=2)
    except openai.AuthenticationError:
        return
    raise AssertionError("a wrong API key must be rejected")


@sgl.function
def two_turns(s, question):
    s += "Q: " + question + "\nA:"
    s += sgl.gen("first", max_tokens=8, temperature=0)
    s += "\nQ: And then?\nA:"
    s += sgl.gen("second", max_tokens=8, temperature=0)


def test_frontend_language_program(harli_server):
    backend = sgl.RuntimeEndpoint(harli_server.base_url, api_key=API_KEY)
    state = two_turns.run(question="What is 2+2?", backend=backend)
    for name in ("first", "second"):
        assert isinstance(state[name], str)
        assert state.get_meta_info(name)["completion_tokens"] >= 1
    # The second generation saw the first one's text in its prompt.
    assert state.text().index(state["first"]) < state.text().index("And then?")


@sgl.function
def chat(s, question):
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=6, temperature=0))


def test_frontend_chat_renders_the_models_template(harli_server, model_path):
    import harli_sgl.frontend  # noqa: F401  (the client registers the template)
    from transformers import AutoTokenizer

    backend = sgl.RuntimeEndpoint(harli_server.base_url, api_key=API_KEY)
    assert backend.chat_template.name == "byte-llama"
    state = chat.run(question="Capital of Peru?", backend=backend)
    tok = AutoTokenizer.from_pretrained(model_path)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Capital of Peru?"}],
                                     tokenize=False, add_generation_prompt=True)
    # The program sent exactly what /v1/chat/completions renders, then the answer.
    assert state.text().startswith(prompt + state["answer"])
    assert state.get_meta_info("answer")["completion_tokens"] >= 1


def test_bench_serving_random_ids(harli_server, model_path, tmp_path):
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang",
           "--base-url", harli_server.base_url, "--dataset-name", "random-ids",
           "--num-prompts", "6", "--random-input-len", "32", "--random-output-len", "16",
           "--request-rate", "4", "--tokenizer", model_path, "--model", model_path,
           "--output-file", str(out), "--seed", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENAI_API_KEY": API_KEY})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["completed"] == 6, result
    assert result["total_output_tokens"] > 0
    assert result["median_tpot_ms"] > 0
