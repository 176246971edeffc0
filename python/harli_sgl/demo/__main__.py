"""``python -m harli_sgl.demo``: the main job of ``scripts/run.sh``.

Starts ``harli_sgl.launch_server`` (every argument is passed through), waits
until it serves, submits the shipped demo dataset (country -> capital, chat
format) as a finetune job through the OpenAI client, follows its events while
the server keeps serving, then shows the adapter answering next to the base
model and prints how to query it. The server keeps running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import openai
import requests

from harli_sgl.tools.server_process import ServerProcess

DATA = os.path.join(os.path.dirname(__file__), "capitals.jsonl")
# Chosen so the byte-level test model (byte-llama-random, the default before
# SmolLM2) learns the set on a 2-core CPU in about a minute (measured: 24/24
# exact after 30 epochs; see docs/usage.md). Not yet re-chosen for SmolLM2.
DEMO_HYPERPARAMETERS = {"n_epochs": 30, "batch_size": 8, "learning_rate_multiplier": 1.0}
DEMO_LORA = {"r": 16, "alpha": 32}


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo_job(base_url: str, api_key: str, model: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key)
    with open(DATA, "rb") as f:
        upload = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=model, training_file=upload.id, suffix="capitals",
                                         hyperparameters=DEMO_HYPERPARAMETERS,
                                         extra_body={"lora": DEMO_LORA})
    say(f"submitted {job.id} ({DEMO_HYPERPARAMETERS}); training in slots while the server serves")
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job.id)
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=50))
        for e in reversed(events):
            if e.id not in seen:
                seen.add(e.id)
                data = e.data or {}
                if e.type == "metrics" and data.get("step", 0) % 10:
                    continue  # every 10th step is enough to watch the loss fall
                if "n_epochs" in data and data.get("epoch") != data.get("n_epochs"):
                    continue
                say(f"  {e.message}")
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(2)
    if job.status != "succeeded":
        raise SystemExit(f"[demo] the demo job ended {job.status}: {job.error}")
    return job.fine_tuned_model


def show(base_url: str, api_key: str, model: str, adapter: str) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key)
    with open(DATA) as f:
        rows = [json.loads(line) for line in f][:4]
    for row in rows:
        q = row["messages"][0]["content"]
        answers = []
        for m in (model, f"{model}:{adapter}"):
            r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": q}],
                                               max_tokens=16, temperature=0)
            answers.append(r.choices[0].message.content)
        say(f"  {q!r}: base -> {answers[0]!r}   adapter -> {answers[1]!r}")
    say("query the adapter yourself:")
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    print(f"""
  curl {base_url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\
    -d '{{"model": "{model}:{adapter}", "messages": [{{"role": "user", "content": "Capital of Peru?"}}], "max_tokens": 16, "temperature": 0}}'

  curl {base_url}/generate -H 'Content-Type: application/json'{auth} \\
    -d '{{"text": "<|user|>Capital of Peru?</s><|assistant|>", "lora_path": "{adapter}", "sampling_params": {{"max_new_tokens": 16, "temperature": 0}}}}'

  status and metrics: curl {base_url}/harli/status
""", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--no-demo-job", action="store_true")
    ours, rest = parser.parse_known_args()
    argv = [*rest, *(["--api-key", ours.api_key] if ours.api_key else [])]
    # The demo's own output and the server's log share the terminal.
    server = ServerProcess(argv, port=ours.port, api_key=ours.api_key or None, inherit_output=True)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    try:
        say(f"starting harli_sgl on {server.base_url} (first start builds caches; ~1 min)")
        server.wait_ready()
        model = requests.get(server.base_url + "/v1/models", headers=server.headers).json()["data"][0]["id"]
        say(f"serving {model}; status: {server.base_url}/harli/status")
        if not ours.no_demo_job:
            adapter = run_demo_job(server.base_url, ours.api_key or "none", model)
            show(server.base_url, ours.api_key, model, adapter)
        say("the server keeps serving; Ctrl-C stops it")
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
