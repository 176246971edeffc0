"""Tenants on a real server (issue 11), each tenant with the official openai client.

One server (the session's ``keyed_server``, conftest.py, which the key and
limit tests share), started with ``--admin-api-key`` on a workdir that
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
* a checkpoint (every step leaves one here) is a model its tenant can call, and
  no other (issue 19, item 11);
* a damaged or missing adapter answers 503 naming it, never a path, records an
  event on its job and one repair line in the log, and serves again once
  repaired (item 10);
* a tenant whose jobs hold every running place gives one back, at a
  checkpoint, to a tenant that queues a job (item 9);
* no key appears in the server's log, in an event or in an error body (last).

An adapter is proven in use by the logprob of the first completion token: the
adapters' weights are far from zero, so with the adapter it differs from the
base model's, and a fine-tuned model name that silently served the base model
(issue 10) would fail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import openai
import pytest
import requests

from harli_sgl.jobs import ids

from conftest import ADMIN_KEY, API_KEY
from e2e_util import BASE_MODEL, capital_rows, jsonl
from store_util import DATA

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ISSUED: list[str] = []  # every tenant key handed out, for the leak check at the end


@pytest.fixture(scope="module")
def server(keyed_server):
    """The session's operator-keyed server on an upgraded workdir (conftest.py)."""
    return keyed_server


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
        # Its own files only: the training file and the job's results file (written by the
        # server for the job's tenant when it succeeded).
        assert job.result_files and sorted(f.id for f in c.files.list()) == sorted(
            [trained[tenant]["file"], *job.result_files])
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
        for stream in (False, True):
            r = post(server, key, path, {**body(theirs), "stream": stream})
            # Refused before any stream starts: a 200 with an error event reads as success.
            assert r.status_code == 404 and theirs in r.text and "does not exist" in r.text, \
                (path, stream, r.status_code, r.text)
    r = post(server, key, "/v1/messages", {"model": theirs, "max_tokens": 1, "messages": [message]})
    assert r.json()["error"]["type"] == "not_found_error"  # Anthropic's shape on its route
    for model, status in ((BASE_MODEL, 200), (theirs, 404), ("no-such-model", 404)):
        r = post(server, key, "/v1/messages/count_tokens", {"model": model, "messages": [message]})
        assert r.status_code == status, (model, r.status_code, r.text)
    assert theirs not in [m.id for m in beta.models.list().data]
    # The base model stays open to every valid key.
    assert beta.completions.create(model=BASE_MODEL, prompt="hi", max_tokens=1).choices


def loaded_lora_id(server, name: str) -> str:
    """The id SGLang gave an adapter when it loaded it (its log prints every ``LoRARef``)."""
    with open(server.log_path, errors="replace") as f:
        found = re.findall(rf"LoRARef\(lora_id=([0-9a-f]{{32}}), lora_name={re.escape(name)},", f.read())
    assert found, f"{name} was never loaded"
    return found[-1]


def test_every_adapter_naming_field_refuses_other_tenants_unknown_and_junk(server, keys, trained):
    """Fuzz every generating route with every field that can name an adapter (issue 19, 1-2).

    Before the fix a client-supplied ``lora_id`` reached the scheduler unchecked: alpha's id
    served alpha's adapter to beta, and an unknown one killed the server. Each attempt must
    be refused (404 for a name, identical for "not yours" and "no such adapter"; 400 for
    ``lora_id``, which only the server assigns) and the server must still serve after each.
    """
    alpha, key = client(server, keys["alpha"]), keys["beta"]
    theirs = trained["alpha"]["model"]
    mine = first_logprob(alpha, theirs)  # loads alpha's adapter, so it has a lora_id
    their_id = loaded_lora_id(server, theirs)
    names = {"other tenant's": theirs, "unknown": f"ft:{BASE_MODEL}:beta::000000000000",
             "junk": "../../../etc/passwd", "junk base:": f"{BASE_MODEL}:{'x' * 300}"}
    ids = {"other tenant's": their_id, "unknown": "0" * 32, "junk": "not-an-id", "empty": ""}
    message = [{"role": "user", "content": "hi"}]
    gen = {"sampling_params": {"max_new_tokens": 2}}
    by_name = {  # route, body naming the adapter
        "/generate lora_path": lambda n: ("/generate", {"text": "hi", "lora_path": n, **gen}),
        "/generate lora_path list": lambda n: (
            "/generate", {"text": ["hi", "yo"], "lora_path": [None, n], **gen}),
        "/generate stream": lambda n: (
            "/generate", {"text": "hi", "lora_path": n, "stream": True, **gen}),
        "/encode lora_path": lambda n: ("/encode", {"text": "hi", "lora_path": n}),
        "completions model": lambda n: (
            "/v1/completions", {"model": n, "prompt": "hi", "max_tokens": 2}),
        "completions lora_path": lambda n: (
            "/v1/completions", {"model": BASE_MODEL, "prompt": "hi", "max_tokens": 2,
                                "lora_path": n}),
        "completions stream": lambda n: (
            "/v1/completions", {"model": n, "prompt": "hi", "max_tokens": 2, "stream": True}),
        "chat model": lambda n: (
            "/v1/chat/completions", {"model": n, "messages": message, "max_tokens": 2}),
        "chat lora_path": lambda n: (
            "/v1/chat/completions", {"model": BASE_MODEL, "messages": message, "max_tokens": 2,
                                     "lora_path": n}),
        "chat stream": lambda n: (
            "/v1/chat/completions", {"model": n, "messages": message, "max_tokens": 2,
                                     "stream": True}),
        "embeddings": lambda n: ("/v1/embeddings", {"model": n, "input": "hi"}),
        "responses": lambda n: ("/v1/responses", {"model": n, "input": "hi",
                                                  "max_output_tokens": 16}),
        "responses stream": lambda n: ("/v1/responses", {"model": n, "input": "hi", "stream": True,
                                                         "max_output_tokens": 16}),
        "messages": lambda n: ("/v1/messages", {"model": n, "max_tokens": 2, "messages": message}),
        "messages stream": lambda n: ("/v1/messages", {"model": n, "max_tokens": 2, "stream": True,
                                                       "messages": message}),
        "messages count_tokens": lambda n: ("/v1/messages/count_tokens",
                                            {"model": n, "messages": message}),
        "tokenize": lambda n: ("/v1/tokenize", {"model": n, "prompt": "hi"}),
    }
    by_id = {
        "/generate lora_id": lambda i: ("/generate", {"text": "hi", "lora_id": i, **gen}),
        "/generate lora_id list": lambda i: (
            "/generate", {"text": ["hi", "yo"], "lora_id": [None, i], **gen}),
        "/generate lora_id stream": lambda i: (
            "/generate", {"text": "hi", "lora_id": i, "stream": True, **gen}),
        "/generate lora_id beside a base lora_path": lambda i: (
            "/generate", {"text": "hi", "lora_id": i, "lora_path": None, **gen}),
        "/encode lora_id": lambda i: ("/encode", {"text": "hi", "lora_id": i}),
    }
    failures = []
    for fuzz, values, expected in ((by_name, names, 404), (by_id, ids, 400)):
        for route, body_of in fuzz.items():
            for kind, value in values.items():
                path, body = body_of(value)
                try:
                    r = post(server, key, path, body)
                except requests.ConnectionError as e:  # the server died on it
                    pytest.fail(f"{route} with {kind} {value!r}: connection lost ({e})")
                # A refusal inside a 200 stream is no refusal to a client: the status decides.
                named = value.removeprefix(f"{BASE_MODEL}:")  # "<base>:<adapter>" names the adapter
                if r.status_code != expected or (expected == 404 and named not in r.text):
                    failures.append((route, kind, r.status_code, r.text[:200]))
            # Once per route, not per value: /health runs a generation through the scheduler
            # (one per value made this the suite's slowest test), and a value that killed it
            # is still named: the next request loses its connection, or this check fails.
            alive = requests.get(server.base_url + "/health", timeout=30)
            assert alive.status_code == 200, (route, alive.status_code)
    assert not failures, "\n".join(map(str, failures))
    # Still serving, and nothing above disturbed alpha's adapter or its accounting.
    beta = client(server, key)
    assert beta.completions.create(model=BASE_MODEL, prompt="hi", max_tokens=1).choices
    assert first_logprob(alpha, theirs) == pytest.approx(mine)


def test_the_prefix_cache_is_per_tenant(server, keys):
    """Tenant B learned how much of tenant A's prompt was cached (issue 19, item 3)."""
    prompt = "The launch code of project Zebra is 4417; the backup code is 9921. " * 5

    def cached(key: str) -> tuple[int, int]:
        r = post(server, key, "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 1}})
        assert r.status_code == 200, r.text
        return r.json()["meta_info"]["cached_tokens"], r.json()["meta_info"]["prompt_tokens"]

    cached(keys["alpha"])
    again, length = cached(keys["alpha"])
    assert again >= length // 2  # the cache works within a tenant
    assert cached(keys["beta"])[0] == 0  # and tells another tenant nothing
    # A client's own cache_salt cannot reach into another tenant's namespace.
    r = post(server, keys["beta"], "/generate", {"text": prompt, "cache_salt": "tenant=alpha",
                                                 "sampling_params": {"max_new_tokens": 1}})
    assert r.json()["meta_info"]["cached_tokens"] == 0


def test_stored_responses_are_per_tenant(server, keys):
    """Another tenant's previous_response_id continued its conversation (issue 19, item 4)."""
    text = "My locker combination is 31-07-44, remember it for later please."
    first = post(server, keys["alpha"], "/v1/responses", {
        "model": BASE_MODEL, "input": text, "max_output_tokens": 4, "store": True})
    assert first.status_code == 200, first.text
    rid = first.json()["id"]
    follow = {"model": BASE_MODEL, "input": "hi", "max_output_tokens": 2, "previous_response_id": rid}
    mine = post(server, keys["alpha"], "/v1/responses", follow)
    assert mine.status_code == 200, mine.text
    assert mine.json()["usage"]["input_tokens"] > len(text) // 2  # the stored conversation is used
    theirs = post(server, keys["beta"], "/v1/responses", follow)
    assert theirs.status_code == 404 and rid in theirs.text, theirs.text
    for key, status in ((keys["alpha"], 200), (keys["beta"], 404)):
        r = requests.get(f"{server.base_url}/v1/responses/{rid}", timeout=60,
                         headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status, (status, r.status_code, r.text)


def test_a_tenant_serves_its_own_adapter_on_the_responses_route(server, keys, trained):
    """/v1/responses refused every adapter; SGLang's route never applied one (item 6)."""
    mine = trained["alpha"]["model"]

    def answer(model: str) -> str:
        r = post(server, keys["alpha"], "/v1/responses", {
            "model": model, "input": "Capital of Peru?", "max_output_tokens": 16, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["output"][0]["content"][0]["text"]

    assert answer(mine) != answer(BASE_MODEL)


def test_slow_bodies_are_cut_at_their_deadline_and_the_server_keeps_serving(server, keys):
    """Connections trickling a body 3 bytes a second were held forever (issue 19, item 14)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    answers: list[bytes] = []

    def trickle(path: str) -> None:
        kind = "multipart/form-data; boundary=B" if path == "/v1/files" else "application/json"
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['beta']}\r\n"
                      f"Content-Type: {kind}\r\nContent-Length: 4000\r\n\r\n".encode())
            if path == "/v1/files":  # a well-formed start, so only the pace is wrong
                s.sendall(b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n')
            answer = b""
            for _ in range(60):  # 3 bytes a second, for at most 20 s
                try:
                    s.sendall(b"aaa" if path == "/v1/files" else b"   ")
                except OSError:
                    break
                s.settimeout(0.33)
                try:
                    while data := s.recv(65536):
                        answer += data
                    break  # the server closed the connection
                except (TimeoutError, socket.timeout):
                    continue
            answers.append(answer)

    start = time.monotonic()
    threads = [threading.Thread(target=trickle, args=(path,))
               for path in ("/v1/files", "/generate", "/v1/chat/completions") * 4]
    for t in threads:
        t.start()
    ok = post(server, keys["alpha"], "/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 1}})
    assert ok.status_code == 200  # served while they trickle
    for t in threads:
        t.join()
    assert len(answers) == len(threads)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert time.monotonic() - start < 15  # each cut near its deadline (3 s + 4 KB), not at 20 s


def test_model_info_shows_a_tenant_no_server_path(server, keys):
    """/model_info handed tenants the server's filesystem paths (issue 19, item 7)."""
    for route in ("/model_info", "/get_model_info"):
        mine = requests.get(server.base_url + route, timeout=60,
                            headers={"Authorization": f"Bearer {keys['alpha']}"}).json()
        assert mine["model_path"] == mine["tokenizer_path"] == mine["served_model_name"] == BASE_MODEL
        assert "/" not in json.dumps(mine["model_path"])
        operator = admin(server, "GET", route).json()
        assert os.path.isdir(operator["model_path"])  # the operator still gets the paths


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


# --------------------------------------------------------------------------- checkpoints

def test_a_checkpoint_is_a_model_its_tenant_can_call_and_no_other(server, keys, trained):
    alpha, beta = client(server, keys["alpha"]), client(server, keys["beta"])
    ckpts = {c.step_number: c.fine_tuned_model_checkpoint
             for c in alpha.fine_tuning.jobs.checkpoints.list(trained["alpha"]["job"])}
    assert sorted(ckpts) == [1, 2], ckpts
    first = ckpts[1]
    assert first == f"{trained['alpha']['model']}:ckpt-step-1"
    # Served from the checkpoint's own weights on every way of naming a model.
    base, tuned = first_logprob(alpha, BASE_MODEL), first_logprob(alpha, first)
    assert abs(tuned - base) > 1e-3
    assert first_logprob(alpha, BASE_MODEL, lora_path=first) == pytest.approx(tuned)
    assert alpha.chat.completions.create(model=first, max_tokens=1, messages=[
        {"role": "user", "content": "hi"}]).choices
    r = post(server, keys["alpha"], "/generate", {"text": "hi", "lora_path": first,
                                                  "sampling_params": {"max_new_tokens": 1}})
    assert r.status_code == 200, r.text
    # Loaded, it is listed like an adapter, to its tenant only.
    assert first in [m.id for m in alpha.models.list().data]
    assert first not in [m.id for m in beta.models.list().data]
    # To another tenant it is exactly an unknown model, on every route.
    nobody = first.replace("ckpt-step-1", "ckpt-step-9")
    for attempt in (lambda m: beta.completions.create(model=m, prompt="hi", max_tokens=1),
                    lambda m: beta.chat.completions.create(model=m, max_tokens=1, messages=[
                        {"role": "user", "content": "hi"}]),
                    lambda m: beta.models.retrieve(m)):
        body = refused(lambda: attempt(first))
        assert body["code"] == "model_not_found"
        assert refused(lambda: attempt(nobody))["message"] == body["message"].replace(first, nobody)
    r = post(server, keys["beta"], "/generate", {"text": "hi", "lora_path": first,
                                                 "sampling_params": {"max_new_tokens": 1}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    # A checkpoint alpha never wrote is unknown to alpha too.
    assert refused(lambda: alpha.completions.create(model=nobody, prompt="hi", max_tokens=1))


# ------------------------------------------------------------------------ damaged adapters

def test_a_damaged_adapter_answers_503_naming_it_records_it_and_tells_the_operator(
        server, keys, trained):
    beta, model, job = client(server, keys["beta"]), trained["beta"]["model"], trained["beta"]["job"]
    path = os.path.join(server.workdir, "adapters", ids.adapter_dir_name(job, "be"))
    weights = os.path.join(path, "adapter_model.safetensors")
    with open(weights, "rb") as f:
        whole = f.read()

    def unload() -> None:  # as when it is evicted, or the server restarted: loaded from disk next
        r = admin(server, "POST", "/unload_lora_adapter", json={"lora_name": model})
        assert r.status_code == 200, r.text

    def unavailable(problem: str) -> None:
        with pytest.raises(openai.InternalServerError) as err:
            beta.completions.create(model=model, prompt="hi", max_tokens=1)
        assert err.value.status_code == 503
        body = err.value.body
        assert body["code"] == "adapter_unavailable" and model in body["message"], body
        assert problem in body["message"], body
        r = post(server, keys["beta"], "/generate", {"text": "hi", "lora_path": model,
                                                     "sampling_params": {"max_new_tokens": 1}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_unavailable", r.text
        for text in (json.dumps(body), r.text):
            assert server.workdir not in text and path not in text
            assert "Repo id" not in text and "deserializing" not in text
        # To another tenant it is still just an unknown model.
        alpha = client(server, keys["alpha"])
        assert refused(lambda: alpha.completions.create(model=model, prompt="hi", max_tokens=1))

    try:
        unload()
        with open(weights, "r+b") as f:
            f.truncate(len(whole) // 2)
        unavailable("adapter_model.safetensors is truncated")
        os.rename(path, path + ".moved")
        unavailable("its directory is missing")
        # The job's record says what happened, without the server's path.
        events = [e for e in beta.fine_tuning.jobs.list_events(job, limit=100)
                  if (e.data or {}).get("code") == "adapter_unavailable"]
        assert [e.level for e in events] == ["error", "error"], events
        assert "directory is missing" in events[0].message and model in events[0].message
        assert all(server.workdir not in e.message for e in events)
        assert beta.fine_tuning.jobs.retrieve(job).status == "succeeded"
        # The operator's log: one line per fault, with the path and what to do.
        with open(server.log_path, errors="replace") as f:
            lines = [line for line in f if "To repair" in line and model in line]
        assert len(lines) == 2 and all(path in line for line in lines), lines
    finally:
        if os.path.isdir(path + ".moved"):
            os.rename(path + ".moved", path)
        with open(weights, "wb") as f:
            f.write(whole)
    # Repaired files serve at once, no restart.
    assert beta.completions.create(model=model, prompt="hi", max_tokens=1).choices
    assert model in [m.id for m in beta.models.list().data]


# ----------------------------------------------------------------- fair share of places

def test_a_tenant_holding_every_running_place_gives_one_to_a_tenant_that_queues(server):
    """With every place (--harli-max-running-jobs, 4 by default) taken by one tenant's long
    jobs, another tenant's job runs at one of their checkpoints, not once one of them ends."""
    hog, late = (client(server, new_key(server, t)["key"]) for t in ("delta", "omega"))
    f = hog.files.create(file=("d.jsonl", jsonl(capital_rows(8))), purpose="fine-tune")
    # 8 examples, batch 1, 50 epochs: 400 steps each, far more than this test waits for.
    long = [hog.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, seed=1,
        hyperparameters={"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 1.0})
        for _ in range(4)]
    try:
        deadline = time.monotonic() + 300
        while any(hog.fine_tuning.jobs.retrieve(j.id).status != "running" for j in long):
            assert time.monotonic() < deadline, "the four jobs never all ran"
            time.sleep(0.5)
        g = late.files.create(file=("o.jsonl", jsonl(capital_rows(4))), purpose="fine-tune")
        job = late.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=g.id, seed=1,
            hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0})
        deadline = time.monotonic() + 300
        while late.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued"):
            assert time.monotonic() < deadline, "omega's job never got a running place"
            time.sleep(0.5)
        # None of the four ended: a place was given back, at a checkpoint.
        statuses = [hog.fine_tuning.jobs.retrieve(j.id).status for j in long]
        assert all(s in ("running", "queued") for s in statuses), statuses
        preempted = [j.id for j in long if any(
            "fair share" in e.message for e in hog.fine_tuning.jobs.list_events(j.id, limit=100))]
        assert len(preempted) == 1, preempted  # one place for one waiting job, no more
        # And the preempted job runs again from its checkpoint once the place is free.
        deadline = time.monotonic() + 300
        while not any("resumed from the checkpoint" in e.message
                      for e in hog.fine_tuning.jobs.list_events(preempted[0], limit=100)):
            assert time.monotonic() < deadline, "the preempted job never resumed"
            time.sleep(0.5)
        assert late.fine_tuning.jobs.retrieve(job.id).status in ("running", "succeeded")
    finally:
        for j in long:
            hog.fine_tuning.jobs.cancel(j.id)


# ------------------------------------------------------------------------------ leaks

def test_no_key_appears_in_a_log_an_event_or_an_error_body(server, keys, trained):
    r = requests.get(server.base_url + "/v1/files", timeout=60,
                     headers={"Authorization": "Bearer hk-not-a-real-key-0123456789"})
    assert r.status_code == 401 and "hk-not-a-real-key" not in r.text
    # A key sent in the URL is refused, and uvicorn's access log, which records query
    # strings, must not keep it (issue 19, item 8).
    r = requests.get(server.base_url + "/v1/files", params={"api_key": keys["alpha"]}, timeout=60)
    assert r.status_code == 401
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
