"""After a server crash and restart, jobs resume from checkpoints and nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from conftest import start_server
from e2e_util import BASE_MODEL, capital_rows, client, create_job, events, upload, wait_job


@pytest.fixture
def restartable(tmp_path_factory):
    servers = []

    def start(workdir=None):
        flags = ["--harli-checkpoint-every-steps", "3"]
        s = start_server(tmp_path_factory, "restart", flags, workdir=workdir)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


def crash(server):
    """kill -9 the whole server process group: no graceful shutdown at all."""
    os.killpg(os.getpgid(server.proc.pid), signal.SIGKILL)
    server.proc.wait(30)


PROBE = "<|user|>Capital of Peru?</s><|assistant|>Lima</s>"


def prompt_logprobs(server, lora_path=None) -> list[float]:
    """The served model's logprob of every probe token (greedy, no sampling noise)."""
    r = requests.post(server.base_url + "/generate", headers=server.headers, timeout=120, json={
        "text": PROBE, "lora_path": lora_path, "return_logprob": True, "logprob_start_len": 0,
        "sampling_params": {"max_new_tokens": 1, "temperature": 0}})
    r.raise_for_status()
    return [lp for lp, _tok, _ in r.json()["meta_info"]["input_token_logprobs"][1:]]


def test_server_crash_and_restart_resumes_job_and_keeps_files_and_adapters(restartable):
    first = restartable()
    done_file = upload(first, capital_rows(8))
    finished = wait_job(first, create_job(first, done_file.id, n_epochs=2, batch_size=4).id)
    assert finished.status == "succeeded"
    base_answers = prompt_logprobs(first)
    adapter_answers = prompt_logprobs(first, finished.fine_tuned_model)
    # A control: the adapter changes the answers, so serving the base model instead fails.
    assert max(abs(a - b) for a, b in zip(adapter_answers, base_answers)) > 1e-4
    long_job = create_job(first, done_file.id, n_epochs=6, batch_size=4)  # 12 steps
    deadline = time.monotonic() + 600
    while not list(client(first).fine_tuning.jobs.checkpoints.list(long_job.id)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    crash(first)

    second = restartable(workdir=first.workdir)
    c = client(second)
    assert done_file.id in {f.id for f in c.files.list()}
    assert c.files.content(done_file.id).read()
    resumed = wait_job(second, long_job.id)
    assert resumed.status == "succeeded", resumed.error
    # The resumed job's record is complete: its model, its tokens, and a metrics event
    # for every one of its 12 steps (those between the checkpoint and the crash ran twice).
    assert resumed.fine_tuned_model and resumed.trained_tokens > 0 and resumed.finished_at
    evs = events(second, long_job.id)
    assert any("resumed from the checkpoint" in e.message for e in evs)
    steps = {e.data["step"] for e in evs if e.type == "metrics"}
    assert steps == set(range(1, 13)), sorted(steps)
    assert any("adapter saved" in e.message for e in evs)
    ckpts = list(c.fine_tuning.jobs.checkpoints.list(long_job.id))
    assert ckpts and max(k.step_number for k in ckpts) >= 9
    # The adapter finished before the crash is served again after the restart.
    deadline = time.monotonic() + 120
    while finished.fine_tuned_model not in {m.id for m in c.models.list().data}:
        assert time.monotonic() < deadline, "the earlier adapter was not re-published"
        time.sleep(1)
    out = c.chat.completions.create(model=f"{BASE_MODEL}:{finished.fine_tuned_model}",
                                    messages=[{"role": "user", "content": "Capital of Peru?"}],
                                    max_tokens=4, temperature=0)
    assert out.usage.completion_tokens >= 1
    # ...and it is the same adapter: the answers it gave before the crash, to fp32 noise.
    again = prompt_logprobs(second, finished.fine_tuned_model)
    assert max(abs(a - b) for a, b in zip(again, adapter_answers)) < 1e-4
