"""Finetune jobs against the real server: learn, serve, share weights, survive crashes."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests
import torch

from e2e_util import (
    BASE_MODEL, CAPITALS_HYPERPARAMETERS, CAPITALS_LORA, capital_rows, client, create_job, events,
    generate, status, upload, wait_job, wait_worker_alive,
)
from harli_sgl.jobs.ids import adapter_dir_name


@pytest.fixture(scope="module")
def demo_job(harli_server):
    """The capitals job on the byte model, trained once for the module (about a minute of CPU)."""
    wait_worker_alive(harli_server)
    f = upload(harli_server, capital_rows())
    job = client(harli_server).fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, suffix="capitals", seed=0,
        hyperparameters=CAPITALS_HYPERPARAMETERS, extra_body={"lora": CAPITALS_LORA})
    assert job.status in ("validating_files", "queued")
    return wait_job(harli_server, job.id)


def chat_answer(server, model, question):
    r = client(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0)
    return r.choices[0].message.content


def test_demo_job_lifecycle_events_and_checkpoints(harli_server, demo_job):
    assert demo_job.status == "succeeded", demo_job.error
    assert demo_job.fine_tuned_model.startswith(f"ft:{BASE_MODEL}:default:capitals:")
    assert demo_job.trained_tokens > 0
    evs = events(harli_server, demo_job.id)
    messages = [e.message for e in evs]
    assert any("validated" in m for m in messages) and any("successfully" in m for m in messages)
    metrics = [e for e in evs if e.type == "metrics"]
    assert len(metrics) == 90  # 24 examples / batch 8 = 3 steps per epoch, 30 epochs
    for e in metrics:
        for key in ("step", "train_loss", "trained_tokens", "tokens_per_s"):
            assert key in e.data, key
    losses = [e.data["train_loss"] for e in sorted(metrics, key=lambda e: e.data["step"])]
    assert losses[-1] < losses[0] / 10, "the loss falls by an order of magnitude"
    ckpts = list(client(harli_server).fine_tuning.jobs.checkpoints.list(demo_job.id))
    assert ckpts and all(c.step_number % 5 == 0 for c in ckpts)
    assert {"step", "train_loss"} <= set(ckpts[0].metrics.model_dump(exclude_none=True))


def test_adapter_answers_training_prompts_far_better_than_base(harli_server, demo_job):
    adapter = f"{BASE_MODEL}:{demo_job.fine_tuned_model}"
    rows = capital_rows()
    correct = {"base": 0, "adapter": 0}
    for row in rows:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        correct["base"] += chat_answer(harli_server, BASE_MODEL, question).strip() == answer
        correct["adapter"] += chat_answer(harli_server, adapter, question).strip() == answer
    rate = {k: v / len(rows) for k, v in correct.items()}
    assert rate["adapter"] >= 0.9, rate
    assert rate["adapter"] - rate["base"] >= 0.8, rate
    # The same adapter through /generate with lora_path.
    out = generate(harli_server, "<|user|>Capital of Peru?</s><|assistant|>", max_new_tokens=8,
                   lora_path=demo_job.fine_tuned_model)
    assert out["text"].startswith("Lima")
    listed = [m.id for m in client(harli_server).models.list().data]
    assert demo_job.fine_tuned_model in listed


def test_served_adapter_logprobs_match_hf_peft(harli_server, demo_job, model_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "<|user|>Capital of Norway?</s><|assistant|>Oslo</s>"
    r = requests.post(harli_server.base_url + "/generate", headers=harli_server.headers, json={
        "text": text, "lora_path": demo_job.fine_tuned_model, "return_logprob": True,
        "logprob_start_len": 0, "sampling_params": {"max_new_tokens": 1, "temperature": 0}},
        timeout=120).json()
    served = [lp for lp, _tok, _ in r["meta_info"]["input_token_logprobs"][1:]]
    # Ids from the tokenizer: SGLang 0.5.23 reports the last vocabulary id (262 here)
    # as 0 in input_token_logprobs (its logprob is the right one; stock SGLang does it too).
    ids = AutoTokenizer.from_pretrained(model_path).encode(text, add_special_tokens=False)
    assert len(served) == len(ids) - 1
    base = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa")
    # The adapter's directory is named for its job (the model name holds ':').
    adapter_dir = os.path.join(harli_server.workdir, "adapters",
                               adapter_dir_name(demo_job.id, "capitals"))
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    diff = max(abs(a - b) for a, b in zip(served, expected))
    assert diff < 1e-3, diff
    # And the adapter really changes the distribution (otherwise parity is trivial).
    with torch.no_grad(), model.disable_adapter():
        base_logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    assert max(abs(base_logp[i - 1, ids[i]].item() - e) for i, e in zip(range(1, len(ids)), expected)) > 1.0


def _shm_mappings(pid: int) -> dict[int, int]:
    """inode -> mapped bytes of the deleted shared-memory files a process maps."""
    out: dict[int, int] = {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ("/dev/shm/" in parts[5] or parts[5].startswith("/memfd:")):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                inode = int(parts[4])
                out[inode] = out.get(inode, 0) + hi - lo
    return out


def test_worker_holds_no_private_copy_of_the_base_weights(harli_server, model_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    s = wait_worker_alive(harli_server)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    hf_bytes = sum(p.numel() * 4 for p in hf.parameters())
    assert s["worker"]["shared_base_bytes"] == hf_bytes
    assert s["worker"]["private_base_bytes"] == 0
    # The weight tensors themselves: every storage under the worker's frozen parameters
    # lies in a segment that holds the scheduler's serving weights, none in the KV pool
    # (whose 256 MB of shared memory alone would satisfy a count of shared mappings).
    mine = s["worker"]["base_weight_segments"]
    serving, kv = s["worker"]["serving_weight_segments"], s["worker"]["kv_pool_segments"]
    assert mine and serving and kv, s["worker"]
    assert "private" not in mine and set(mine) <= set(serving), (mine, serving)
    assert not set(mine) & set(kv)
    assert sum(mine.values()) >= hf_bytes
    # ...and those segments are mapped by both processes (dev:inode from /proc/<pid>/maps).
    worker = psutil.Process(s["worker"]["pid"])
    scheduler = worker.parent()
    w, sch = _shm_mappings(worker.pid), _shm_mappings(scheduler.pid)
    inodes = {int(k.rsplit(":", 1)[1]) for k in mine}
    assert inodes <= set(w) and inodes <= set(sch)


def test_cancel_running_job_keeps_worker_serving(harli_server):
    f = upload(harli_server, capital_rows(8))
    job = create_job(harli_server, f.id, n_epochs=50, batch_size=1)
    wait_job(harli_server, job.id, statuses=("running",))
    cancelled = client(harli_server).fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(2)
    assert client(harli_server).fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert status(harli_server)["worker"]["alive"]
    assert generate(harli_server, "still serving", 4)["meta_info"]["completion_tokens"] == 4
    with pytest.raises(Exception) as e:
        client(harli_server).fine_tuning.jobs.cancel(job.id)
    assert getattr(e.value, "status_code", None) == 400


def test_two_jobs_run_together_and_both_succeed(harli_server):
    f = upload(harli_server, capital_rows(8))
    a = create_job(harli_server, f.id, n_epochs=6, batch_size=4, suffix="a")
    b = create_job(harli_server, f.id, n_epochs=6, batch_size=4, suffix="b")
    both_running = False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        sa = client(harli_server).fine_tuning.jobs.retrieve(a.id).status
        sb = client(harli_server).fine_tuning.jobs.retrieve(b.id).status
        both_running |= sa == sb == "running"
        if sa in ("succeeded", "failed") and sb in ("succeeded", "failed"):
            break
        time.sleep(0.5)
    assert (sa, sb) == ("succeeded", "succeeded")
    assert both_running, "the two jobs share the worker instead of running one after the other"


def test_worker_crash_mid_job_resumes_from_checkpoint(harli_server):
    f = upload(harli_server, capital_rows(8))
    v = upload(harli_server, capital_rows()[8:12], name="valid.jsonl")
    # 24 steps, checkpoints every 5; validation on a sample every ceil(24 / 20) = 2 steps and on
    # all of it at each checkpoint and at the end.
    job = create_job(harli_server, f.id, n_epochs=12, batch_size=4, validation_file=v.id)
    c = client(harli_server)
    deadline = time.monotonic() + 600
    while not list(c.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.5)
    pid = status(harli_server)["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    done = wait_job(harli_server, job.id)
    assert done.status == "succeeded", done.error
    msgs = [e.message for e in events(harli_server, job.id)]
    assert any("resumed from the checkpoint" in m for m in msgs), msgs
    assert any("worker restarted" in m for m in msgs)
    metrics = [e.data for e in events(harli_server, job.id) if e.type == "metrics"]
    assert max(m["step"] for m in metrics) == 24
    # Every planned step was evaluated (a step re-run after the crash may be evaluated
    # twice), and checkpoints carry the full validation metrics of their step.
    valid = {m["step"]: m["valid_loss"] for m in metrics if "valid_loss" in m}
    full = {m["step"] for m in metrics if "full_valid_loss" in m}
    # (A checkpoint deferred while the previous one is written comes, and is evaluated, a step later.)
    evens = set(range(2, 25, 2))
    assert evens <= set(valid) and set(valid) - evens <= full and 24 in full, (sorted(valid), full)
    assert all(0 < x < 100 for x in valid.values()), valid
    ckpts = list(client(harli_server).fine_tuning.jobs.checkpoints.list(job.id))
    assert {c.step_number for c in ckpts} <= full
    assert ckpts and all(c.metrics.full_valid_loss is not None and
                         0 <= c.metrics.full_valid_mean_token_accuracy <= 1 for c in ckpts), ckpts
    assert len(done.result_files) == 1  # and the results file is written after a resume too


def test_job_routes_require_the_api_key(harli_server):
    for method, path in (("get", "/v1/files"), ("get", "/v1/fine_tuning/jobs"),
                         ("post", "/v1/fine_tuning/jobs")):
        r = requests.request(method, harli_server.base_url + path, json={}, timeout=30)
        assert r.status_code == 401, (path, r.status_code)
