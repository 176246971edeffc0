"""The demo job's data and settings (see the module docstring of :mod:`harli_sgl.demo.__main__`).

Files next to this module:

* ``quillmere.jsonl``: 8 facts about Quillmere, a town invented for this demo,
  so no pretrained model can know them (chat format, one question each);
* ``general.jsonl``: general questions answered with SmolLM2-135M-Instruct's own
  greedy answers (first sentence), mixed into the job so the adapter keeps them;
* ``probes.json``: the questions the demo asks, each with the key words a right
  answer contains: ``facts`` (the training questions) and ``general`` (never
  trained on; the demo counts those the base model answers right and checks the
  adapter still does).
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FACTS = os.path.join(HERE, "quillmere.jsonl")
GENERAL = os.path.join(HERE, "general.jsonl")
PROBES = os.path.join(HERE, "probes.json")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_probes() -> dict[str, list[dict]]:
    with open(PROBES) as f:
        return json.load(f)


def correct(answer: str, probe: dict) -> bool:
    """At least ``probe["min"]`` (default 1) of its key words occur in ``answer``, any case."""
    text = answer.lower()
    return sum(word.lower() in text for word in probe["expect"]) >= probe.get("min", 1)
