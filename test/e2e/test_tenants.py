"""Tenants on a real server (issue 11), each tenant with the official openai client.

One server for the module, started with ``--admin-api-key`` on a workdir that
today's release wrote (schema 2: a file and a succeeded job whose adapter, with
random weights, is served under its old name), so the upgrade is tested on the
same server as the tenants:

* the old objects belong to the default tenant (the server's ``--api-key``),
  nothing is lost, and the old adapter answers to its old name;
* tenants ``alpha`` and ``beta`` (keys from the admin route) each train and
  serve their own adapter; everything of alpha's answers beta 404, and every
  route that can name an adapter refuses alpha's to beta, until an admin
  shares it;
* a revoked key is refused at once; quotas are refused with 429 naming the
  limit; tenants' keys reach no operator route;
* no key appears in the server's log, in an event or in an error body (last).

An adapter is proven in use by the logprob of the first completion token: the
adapters' weights are far from zero, so with the adapter it differs from the
base model's, and a fine-tuned model name that silently served the base model
(issue 10) would fail.
"""

from __future__ import annotations

import json
import os
import time

import openai
import pytest
import requests

from conftest import API_KEY, start_server, wait_profiled
from e2e_util import BASE_MODEL, capital_rows, jsonl
from store_util import DATA, write_v2_store

ADMIN_KEY = "harli-admin-key-tenants-91c3"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ISSUED: list[str] = []  # every tenant key handed out, for the leak check at the end


def make_random_adapter(path: str) -> None:
    """A PEFT adapter for the default model with random (not zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harli_sgl.model import byte_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(byte_model.ensure())
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tenants-workdir") / "workdir")
    legacy = write_v2_store(work, statuses=("succeeded",))
    make_random_adapter(os.path.join(work, "adapters", legacy["adapter"]))
    s = start_server(tmp_path_factory, "tenants", ["--admin-api-key", ADMIN_KEY], workdir=work)
    s.legacy = legacy  # type: ignore[attr-defined]
    try:
        wait_profiled(s, headers=ADMIN)
        yield s
    finally:
        s.stop()


def admin(server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, server.base_url + path, headers=ADMIN, timeout=60, **kw)


def new_key(server, tenant: str) -> dict:
    r = admin(server, "POST", "/harli/keys", json={"tenant": tenant, "name": "e2e"})
    assert r.status_code == 200, r.text
    ISSUED.append(r.json()["key"])
    return r.json()


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def post(server, key: str, path: str, body: dict) -> requests.Response:
    return requests.post(server.base_url + path, headers={"Authorization": f"Bearer {key}"},
                         json=body, timeout=300)


@pytest.fixture(scope="module")
def keys(server) -> dict[str, str]:
    return {t: new_key(server, t)["key"] for t in ("alpha", "beta")}


@pytest.fixture(scope="module")
def trained(server, keys) -> dict:
    """Each tenant's file and succeeded job (a few seconds of CPU each)."""
    made = {}
    for tenant, key in keys.items():
        c = client(server, key)
        f = c.files.create(file=("train.jsonl", jsonl(capital_rows(4))), purpose="fine-tune")
        job = c.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id, suffix=tenant[:2], seed=1,
            hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10.0},
            extra_body={"lora": {"r": 8, "alpha": 16}})
        made[tenant] = {"file": f.id, "job": job.id}
    for tenant, key in keys.items():
        c = client(server, key)
        deadline = time.monotonic() + 900
        while (job := c.fine_tuning.jobs.retrieve(made[tenant]["job"])).status not in (
                "succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
        assert job.status == "succeeded", job.error
        made[tenant]["model"] = job.fine_tuned_model
    return made


def first_logprob(c: openai.OpenAI, model: str, **extra) -> float:
    r = c.completions.create(model=model, prompt="<|user|>Capital of Peru?</s><|assistant|>",
                             max_tokens=1, temperature=0, logprobs=1, extra_body=extra or None)
    return r.choices[0].logprobs.token_logprobs[0]


def refused(call) -> dict:
    with pytest.raises(openai.NotFoundError) as err:
        call()
    return err.value.body


# ------------------------------------------------------------------------------- upgrade

def test_an_old_workdir_opens_and_its_objects_are_the_default_tenants(server, keys):
    legacy, default = server.legacy, client(server, API_KEY)
    job = default.fine_tuning.jobs.retrieve(legacy["succeeded"])
    assert job.organization_id == "default" and job.status == "succeeded"
    assert job.fine_tuned_model == legacy["adapter"] and job.metadata == {"team": "a"}
    assert [e.message for e in default.fine_tuning.jobs.list_events(job.id)] == ["it is succeeded"]
    assert legacy["file"] in [f.id for f in default.files.list()]
    assert default.files.content(legacy["file"]).read() == DATA
    alpha = client(server, keys["alpha"])
    refused(lambda: alpha.fine_tuning.jobs.retrieve(job.id))
    refused(lambda: alpha.files.content(legacy["file"]))
    # Its adapter answers to its old name, alone or after the base model's, on every route.
    base = first_logprob(default, BASE_MODEL)
    by_name = first_logprob(default, legacy["adapter"])
    assert abs(by_name - base) > 1e-3
    assert first_logprob(default, f"{BASE_MODEL}:{legacy['adapter']}") == pytest.approx(by_name)
    out = post(server, API_KEY, "/generate", {
        "text": "hi", "lora_path": legacy["adapter"], "sampling_params": {"max_new_tokens": 2}})
    assert out.status_code == 200, out.text
    refused(lambda: first_logprob(alpha, legacy["adapter"]))


# ----------------------------------------------------------------------- own flow, names

def test_each_tenant_trains_and_serves_its_own_adapter(server, keys, trained):
    for tenant, key in keys.items():
        c, model = client(server, key), trained[tenant]["model"]
        short = trained[tenant]["job"][len("ftjob-"):][:12]
        assert model == f"ft:{BASE_MODEL}:{tenant}:{tenant[:2]}:{short}"
        job = c.fine_tuning.jobs.retrieve(trained[tenant]["job"])
        assert job.organization_id == tenant
        assert [x.id for x in c.fine_tuning.jobs.list()] == [job.id]
        assert [f.id for f in c.files.list()] == [trained[tenant]["file"]]
        # The name alone selects the adapter (never the base model), as does base:name.
        base, tuned = first_logprob(c, BASE_MODEL), first_logprob(c, model)
        assert abs(tuned - base) > 1e-3
        assert first_logprob(c, f"{BASE_MODEL}:{model}") == pytest.approx(tuned)
        assert first_logprob(c, BASE_MODEL, lora_path=model) == pytest.approx(tuned)
        chat = c.chat.completions.create(model=model, max_tokens=2, temperature=0,
                                         messages=[{"role": "user", "content": "Capital of Peru?"}])
        assert chat.usage.completion_tokens >= 1
        out = post(server, key, "/generate", {"text": "Capital of Peru?", "lora_path": model,
                                              "sampling_params": {"max_new_tokens": 2}})
        assert out.status_code == 200, out.text
        assert model in [m.id for m in c.models.list().data]
        assert c.models.retrieve(model).id == model


# ------------------------------------------------------------------------ isolation

def test_every_cross_tenant_read_cancel_delete_and_download_answers_404(server, keys, trained):
    beta, alphas = client(server, keys["beta"]), trained["alpha"]
    bodies = [
        refused(lambda: beta.files.retrieve(alphas["file"])),
        refused(lambda: beta.files.content(alphas["file"])),
        refused(lambda: beta.files.delete(alphas["file"])),
        refused(lambda: beta.fine_tuning.jobs.retrieve(alphas["job"])),
        refused(lambda: beta.fine_tuning.jobs.cancel(alphas["job"])),
        refused(lambda: beta.fine_tuning.jobs.list_events(alphas["job"])),
        refused(lambda: beta.fine_tuning.jobs.checkpoints.list(alphas["job"])),
    ]
    missing = refused(lambda: beta.files.retrieve("file-" + "0" * 24))
    for body in bodies:
        assert set(body) == set(missing) and body["code"] == "not_found"
    assert alphas["file"] not in [f.id for f in beta.files.list()]
    assert alphas["job"] not in [j.id for j in beta.fine_tuning.jobs.list()]
    with pytest.raises(openai.BadRequestError):
        beta.fine_tuning.jobs.create(model=BASE_MODEL, training_file=alphas["file"])
    alpha = client(server, keys["alpha"])
    assert alpha.fine_tuning.jobs.retrieve(alphas["job"]).status == "succeeded"
    assert alpha.files.retrieve(alphas["file"]).id == alphas["file"]


def test_another_tenants_adapter_is_refused_on_every_route(server, keys, trained):
    key, theirs = keys["beta"], trained["alpha"]["model"]
    beta = client(server, key)
    nobody = f"ft:{BASE_MODEL}:beta::000000000000"
    message = {"role": "user", "content": "hi"}
    attempts = {
        "chat model": lambda m: beta.chat.completions.create(model=m, messages=[message], max_tokens=1),
        "chat base:model": lambda m: beta.chat.completions.create(
            model=f"{BASE_MODEL}:{m}", messages=[message], max_tokens=1),
        "chat stream": lambda m: list(beta.chat.completions.create(
            model=m, messages=[message], max_tokens=1, stream=True)),
        "chat lora_path": lambda m: beta.chat.completions.create(
            model=BASE_MODEL, messages=[message], max_tokens=1, extra_body={"lora_path": m}),
        "completions model": lambda m: beta.completions.create(model=m, prompt="hi", max_tokens=1),
        "completions lora_path": lambda m: beta.completions.create(
            model=BASE_MODEL, prompt="hi", max_tokens=1, extra_body={"lora_path": m}),
        "embeddings": lambda m: beta.embeddings.create(model=m, input="hi"),
        "models retrieve": lambda m: beta.models.retrieve(m),
    }
    for route, attempt in attempts.items():
        body = refused(lambda: attempt(theirs))
        assert body["code"] == "model_not_found" and theirs in body["message"], route
        # The same answer as for a model that does not exist: nothing leaks.
        assert refused(lambda: attempt(nobody))["message"] == body["message"].replace(theirs, nobody)
    for lora_path in (theirs, [theirs, None]):
        text = "hi" if isinstance(lora_path, str) else ["hi", "there"]
        r = post(server, key, "/generate", {"text": text, "lora_path": lora_path,
                                            "sampling_params": {"max_new_tokens": 1}})
        assert r.status_code == 404 and theirs in r.text, r.text
    r = post(server, key, "/v1/tokenize", {"model": theirs, "prompt": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # SGLang's Responses and Anthropic Messages routes build on its chat route. Each must
    # serve the base model (so a refusal below is not the route being absent) and refuse
    # the other tenant's adapter.
    other_apis = {
        "/v1/responses": lambda m: {"model": m, "input": "hi", "max_output_tokens": 16},
        "/v1/messages": lambda m: {"model": m, "max_tokens": 1, "messages": [message]},
    }
    for path, body in other_apis.items():
        ok = post(server, key, path, body(BASE_MODEL))
        assert ok.status_code == 200, (path, ok.status_code, ok.text)
        r = post(server, key, path, body(theirs))
        # SGLang's Anthropic adapter turns the chat route's 404 into its own 400 envelope.
        expected = (404,) if path == "/v1/responses" else (400, 404)
        assert r.status_code in expected and theirs in r.text and "does not exist" in r.text, \
            (path, r.status_code, r.text)
    assert theirs not in [m.id for m in beta.models.list().data]
    # The base model stays open to every valid key.
    assert beta.completions.create(model=BASE_MODEL, prompt="hi", max_tokens=1).choices


def test_an_admin_can_share_an_adapter(server, keys, trained):
    beta, theirs = client(server, keys["beta"]), trained["alpha"]["model"]
    r = admin(server, "POST", "/harli/shares", json={"adapter": theirs, "tenant": "beta"})
    assert r.status_code == 200, r.text
    assert first_logprob(beta, theirs) == pytest.approx(first_logprob(client(server, keys["alpha"]), theirs))
    assert theirs in [m.id for m in beta.models.list().data]
    r = admin(server, "DELETE", "/harli/shares", params={"adapter": theirs, "tenant": "beta"})
    assert r.status_code == 200, r.text
    refused(lambda: first_logprob(beta, theirs))


# ------------------------------------------------------------------------------- keys

def test_a_revoked_key_is_refused_at_once(server):
    made = new_key(server, "alpha")
    c = client(server, made["key"])
    assert c.files.list() is not None
    listed = admin(server, "GET", "/harli/keys", params={"tenant": "alpha"}).json()["data"]
    assert made["id"] in [k["id"] for k in listed] and made["key"] not in json.dumps(listed)
    r = admin(server, "DELETE", f"/harli/keys/{made['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"]
    for call in (c.files.list, lambda: c.completions.create(model=BASE_MODEL, prompt="hi",
                                                            max_tokens=1)):
        with pytest.raises(openai.AuthenticationError) as err:
            call()
        assert made["key"] not in err.value.response.text
        assert err.value.body["code"] == "invalid_api_key"


def test_tenant_keys_reach_no_operator_route(server, keys):
    key = keys["alpha"]
    h = {"Authorization": f"Bearer {key}"}
    for method, path, body in (("POST", "/harli/policy", {"mode": "idle"}),
                               ("POST", "/harli/profile", {"enabled": False}),
                               ("POST", "/load_lora_adapter", {"lora_name": "x", "lora_path": "/x"}),
                               ("POST", "/harli/keys", {"tenant": "alpha"}),
                               ("GET", "/harli/keys", None), ("GET", "/harli/tenants", None),
                               ("POST", "/flush_cache", None), ("GET", "/server_info", None),
                               ("POST", "/set_internal_state", {"server_args": {}})):
        r = requests.request(method, server.base_url + path, headers=h, json=body, timeout=60)
        assert r.status_code in (401, 403), (path, r.status_code, r.text)
    mine = requests.get(server.base_url + "/harli/status", headers=h, timeout=60).json()
    assert mine["tenant"] == "alpha" and "worker" not in mine
    assert requests.get(server.base_url + "/harli/status", headers=ADMIN, timeout=60).json()["worker"]
    # The server's own key keeps its old rights on SGLang's routes, but is not the admin.
    assert requests.get(server.base_url + "/server_info", headers=server.headers, timeout=60).ok
    r = requests.get(server.base_url + "/harli/keys", headers=server.headers, timeout=60)
    assert r.status_code == 401


# ----------------------------------------------------------------------------- quotas

def test_quotas_are_enforced_and_named(server):
    data = jsonl(capital_rows(8))
    r = admin(server, "POST", "/harli/tenants/gamma", json={
        "max_stored_bytes": len(data) + 10, "max_queued_jobs": 1, "max_running_jobs": 1})
    assert r.status_code == 200 and r.json()["effective_limits"]["max_queued_jobs"] == 1, r.text
    gamma = client(server, new_key(server, "gamma")["key"])
    f = gamma.files.create(file=("g.jsonl", data), purpose="fine-tune")
    with pytest.raises(openai.RateLimitError) as err:
        gamma.files.create(file=("g.jsonl", data), purpose="fine-tune")
    assert err.value.body["code"] == "quota_exceeded"
    assert err.value.body["param"] == "max_stored_bytes" and "max_stored_bytes" in str(err.value)

    def job():
        return gamma.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id,
            hyperparameters={"n_epochs": 50, "batch_size": 4, "learning_rate_multiplier": 1.0})

    first = job()
    deadline = time.monotonic() + 120
    while gamma.fine_tuning.jobs.retrieve(first.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    second = job()
    with pytest.raises(openai.RateLimitError) as err:
        job()
    assert err.value.body["param"] == "max_queued_jobs" and "max_queued_jobs" in str(err.value)
    # max_running_jobs=1: the second job waits although the worker has room for more.
    for _ in range(6):
        time.sleep(0.5)
        assert gamma.fine_tuning.jobs.retrieve(second.id).status == "queued"
    status = requests.get(server.base_url + "/harli/status", timeout=60,
                          headers={"Authorization": f"Bearer {gamma.api_key}"}).json()
    assert status["usage"] == {"running_jobs": 1, "queued_jobs": 1, "stored_bytes": len(data)}
    gamma.fine_tuning.jobs.cancel(first.id)
    deadline = time.monotonic() + 120
    while gamma.fine_tuning.jobs.retrieve(second.id).status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    gamma.fine_tuning.jobs.cancel(second.id)


# ------------------------------------------------------------------------------ leaks

def test_no_key_appears_in_a_log_an_event_or_an_error_body(server, keys, trained):
    r = requests.get(server.base_url + "/v1/files", timeout=60,
                     headers={"Authorization": "Bearer hk-not-a-real-key-0123456789"})
    assert r.status_code == 401 and "hk-not-a-real-key" not in r.text
    secrets = [API_KEY, ADMIN_KEY, *ISSUED]
    assert len(ISSUED) >= 4
    with open(server.log_path, errors="replace") as f:
        log = f.read()
    for secret in secrets:
        assert secret not in log
    for tenant, key in keys.items():
        events = client(server, key).fine_tuning.jobs.list_events(trained[tenant]["job"], limit=100)
        text = json.dumps([e.model_dump() for e in events])
        assert not any(secret in text for secret in secrets)
        # The audit log names the tenant and the object.
        assert f"audit action=job.create tenant={tenant} object={trained[tenant]['job']}" in log
    assert "audit action=key.revoke tenant=alpha object=key-" in log
    assert "audit action=tenant.limits tenant=gamma" in log
