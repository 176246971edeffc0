"""Helpers shared by the end-to-end tests (real server, real clients)."""

from __future__ import annotations

import json
import os
import time

import openai
import requests

from conftest import API_KEY
from harli_sgl.model import byte_model

BASE_MODEL = byte_model.SPECS["small"].name  # what conftest's servers serve


def generate(server, text, max_new_tokens=16, **extra) -> dict:
    r = requests.post(server.base_url + "/generate", headers=server.headers, timeout=300, json={
        "text": text, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0,
                                          "ignore_eos": True}, **extra})
    r.raise_for_status()
    return r.json()


def status(server) -> dict:
    r = requests.get(server.base_url + "/harli/status", headers=server.headers, timeout=60)
    r.raise_for_status()
    return r.json()


def wait_worker_alive(server, timeout_s=300.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = status(server)
        if s["worker"]["alive"]:
            return s
        time.sleep(0.5)
    raise AssertionError(f"worker not alive after {timeout_s}s: {status(server)}")


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(server, rows_or_bytes, name="train.jsonl", purpose="fine-tune"):
    data = rows_or_bytes if isinstance(rows_or_bytes, bytes) else jsonl(rows_or_bytes)
    return client(server).files.create(file=(name, data), purpose=purpose)


def create_job(server, file_id, *, n_epochs=2, batch_size=4, lr=1.0, suffix=None, lora=None,
               validation_file=None):
    kwargs = {"suffix": suffix} if suffix else {}
    if validation_file:
        kwargs["validation_file"] = validation_file
    return client(server).fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=file_id, seed=7,
        hyperparameters={"n_epochs": n_epochs, "batch_size": batch_size,
                         "learning_rate_multiplier": lr},
        extra_body={"lora": lora or {"r": 8, "alpha": 16}}, **kwargs)


def wait_job(server, job_id, statuses=("succeeded", "failed", "cancelled"), timeout_s=900.0):
    c = client(server)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout_s}s: {job.status}")


def events(server, job_id) -> list:
    return list(client(server).fine_tuning.jobs.list_events(job_id, limit=100))


# The byte model's finetune job (country -> capital): learnt to >= 90% exact answers
# in about a minute of CPU (24/24 after 30 epochs). The demo's own job is for a real
# model (harli_sgl.demo); these tests' subject is the job machinery, not knowledge.
CAPITALS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "capitals.jsonl")
CAPITALS_HYPERPARAMETERS = {"n_epochs": 30, "batch_size": 8, "learning_rate_multiplier": 1.0}
CAPITALS_LORA = {"r": 16, "alpha": 32}


def capital_rows(n=None):
    with open(CAPITALS) as f:
        rows = [json.loads(line) for line in f]
    return rows[:n] if n else rows
