"""``python -m harli_sgl.demo``: the main job of ``scripts/run.sh``.

Starts ``harli_sgl.launch_server`` (every argument is passed through), waits
until it serves, and asks the served model (whatever ``/v1/models`` names) the
demo's questions: 8 about Quillmere, a town invented for this demo, and 8
general ones. It then submits a finetune job through the OpenAI client that
teaches the Quillmere facts, follows its events while the server keeps serving,
and asks the adapter the same questions: the facts should now come out right,
and the general questions the base model answered right should still do.
Finally it prints how to query the adapter. The server keeps running until Ctrl-C.

The data (see :mod:`harli_sgl.demo.recipe`):

* ``quillmere.jsonl``: the 8 facts, one short sentence each. Invented, so no
  pretrained model knows them (SmolLM2-135M-Instruct: 0/8 before the job).
* ``general.jsonl``: 8 general questions, answered with SmolLM2-135M-Instruct's
  own greedy answers (their first sentence, the wrong ones left out). The job
  trains on them too: trained on the facts alone, the adapter answers everything
  with Quillmere ("What is the capital of France?" -> a Quillmere sentence).
* ``probes.json``: the questions asked, with the key words a right answer
  contains. Its general questions are *not* in the training file, so keeping
  them is not memorised.

The settings (DEMO_HYPERPARAMETERS, DEMO_LORA) were chosen by measurement with
``benchmark/demo_recipe.py`` (the same training as the server's, in plain
HF + PEFT), on SmolLM2-135M-Instruct; every setting tried, with how many facts
it taught and how many general answers it kept, is in
``benchmark/results/2026-12-02-demo-recipe/``. In short: the facts alone at
10 epochs and lr x2 taught 8/8 but kept 2/8 general answers; fewer epochs alone
kept more but taught fewer (5 epochs: 8/8 and 6/8; 3 epochs: 1/8 and 7/8).
Facts plus the general questions, 8 epochs at lr x0.5 (32 steps of 4) taught
8/8 on each of five seeds and kept 8, 7, 7, 7, 7 of 8 (seed 0, the demo's: 8/8,
also through the server; the other seeds each lost "How many days are in a
week?" -> "A week has 30 days."); lr x1 drifted on numbers more, 5 epochs at
x0.5 taught 6/8, 7 epochs kept 7/8 on every seed, and 16 general questions
instead of 8 scored the same for 1.5x the steps.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import requests

from harli_sgl.demo import recipe
from harli_sgl.tools.server_process import ServerProcess

DATA = recipe.FACTS  # the facts the job teaches (also what demo.fleet asks through the router)
# Chosen on SmolLM2-135M-Instruct by benchmark/demo_recipe.py (see the docstring): with the
# 16-example file, 32 steps.
DEMO_HYPERPARAMETERS = {"n_epochs": 8, "batch_size": 4, "learning_rate_multiplier": 0.5}
DEMO_LORA = {"r": 16, "alpha": 32}
DEMO_SEED = 0  # the seed measured (other seeds were measured too; see the results)
MAX_TOKENS = 24


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def training_file() -> bytes:
    """The job's training file: the facts, then the general questions with the base's answers."""
    with open(recipe.FACTS, "rb") as f, open(recipe.GENERAL, "rb") as g:
        facts, general = f.read(), g.read()
    return facts.rstrip(b"\n") + b"\n" + general


def run_demo_job(base_url: str, api_key: str, model: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key)
    upload = client.files.create(file=("quillmere+general.jsonl", io.BytesIO(training_file())),
                                 purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=model, training_file=upload.id, suffix="quillmere",
                                         seed=DEMO_SEED, hyperparameters=DEMO_HYPERPARAMETERS,
                                         extra_body={"lora": DEMO_LORA})
    say(f"submitted {job.id} ({DEMO_HYPERPARAMETERS}, LoRA {DEMO_LORA}); training in slots "
        "while the server serves")
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job.id)
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=50))
        for e in reversed(events):
            if e.id not in seen:
                seen.add(e.id)
                data = e.data or {}
                if e.type == "metrics" and data.get("step", 0) % 5:
                    continue  # every 5th step is enough to watch the loss fall
                if "n_epochs" in data and data.get("epoch") != data.get("n_epochs"):
                    continue
                say(f"  {e.message}")
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(2)
    if job.status != "succeeded":
        raise SystemExit(f"[demo] the demo job ended {job.status}: {job.error}")
    return job.fine_tuned_model


def ask(base_url: str, api_key: str, model: str, questions: list[str]) -> list[str]:
    """Greedy answers of ``model`` (the base's served name, or a fine-tuned model's name)."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key or "none")

    def one(q: str) -> str:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                           max_tokens=MAX_TOKENS, temperature=0)
        return (r.choices[0].message.content or "").strip()

    # All at once: the server decodes them in one batch (one by one is ~16x slower on a CPU).
    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(one, questions))


def ask_probes(base_url: str, api_key: str, model: str,
               probes: dict[str, list[dict]]) -> dict[str, list[str]]:
    """``model``'s answers to the fact and the general probe questions (one batch)."""
    n = len(probes["facts"])
    answers = ask(base_url, api_key, model, [p["question"] for p in probes["facts"] + probes["general"]])
    return {"facts": answers[:n], "general": answers[n:]}


def ask_base(base_url: str, api_key: str, model: str) -> dict[str, list[str]]:
    probes = recipe.load_probes()
    out = ask_probes(base_url, api_key, model, probes)
    right = {k: sum(recipe.correct(a, p) for a, p in zip(out[k], probes[k])) for k in out}
    say(f"the base model knows {right['facts']}/{len(probes['facts'])} Quillmere facts and answers "
        f"{right['general']}/{len(probes['general'])} general questions right, e.g.:")
    for kind in ("facts", "general"):
        p, a = probes[kind][0], out[kind][0]
        say(f"  {p['question']!r} -> {a!r}")
    return out


def show(base_url: str, api_key: str, model: str, adapter: str,
         base: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Base vs adapter on the facts, and the adapter on the general questions the base got right.

    Returns ``{"facts": (learned, total), "general": (kept, base right)}``.
    """
    probes = recipe.load_probes()
    tuned = ask_probes(base_url, api_key, adapter, probes)
    say("new facts (the job's training questions), base -> adapter:")
    learned = 0
    for p, b, a in zip(probes["facts"], base["facts"], tuned["facts"]):
        ok = recipe.correct(a, p)
        learned += ok
        say(f"  {'ok  ' if ok else 'MISS'} {p['question']!r}: {b!r} -> {a!r}")
    say("general questions the base answered right (not in the training file), adapter:")
    kept = asked = 0
    for p, b, a in zip(probes["general"], base["general"], tuned["general"]):
        if not recipe.correct(b, p):
            continue  # the base did not know it either: nothing to keep
        asked += 1
        ok = recipe.correct(a, p)
        kept += ok
        say(f"  {'ok  ' if ok else 'LOST'} {p['question']!r} -> {a!r}")
    say(f"learned {learned}/{len(probes['facts'])} new facts; kept {kept}/{asked} general answers")
    say("query the adapter yourself (its name is the model):")
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    body = json.dumps({"model": adapter, "max_tokens": MAX_TOKENS, "temperature": 0, "messages": [
        {"role": "user", "content": probes["facts"][1]["question"]}]})
    print(f"""
  curl {base_url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\
    -d {shlex.quote(body)}

  the base model, for comparison: the same with "model": "{model}"
  status and metrics: curl {base_url}/harli/status
""", flush=True)
    return {"facts": (learned, len(probes["facts"])), "general": (kept, asked)}


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
    # Unwind to the ``finally`` below rather than stopping the server inside the handler: the
    # handler can interrupt ``server.proc.wait()``, whose lock a second wait() cannot take, so
    # that stop() waited out its timeouts and raised TimeoutExpired with the server killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        say(f"starting harli_sgl on {server.base_url} (first start builds caches; ~1 min)")
        server.wait_ready()
        model = requests.get(server.base_url + "/v1/models", headers=server.headers).json()["data"][0]["id"]
        say(f"serving {model}; status: {server.base_url}/harli/status")
        if not ours.no_demo_job:
            base = ask_base(server.base_url, ours.api_key, model)
            adapter = run_demo_job(server.base_url, ours.api_key or "none", model)
            show(server.base_url, ours.api_key, model, adapter, base)
        say("the server keeps serving; Ctrl-C stops it")
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
