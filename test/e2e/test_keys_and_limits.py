"""A real server started with both --api-key and --admin-api-key (issue 12, items 3, 5, 6, 7).

The server is the session's ``keyed_server`` (conftest.py), which the tenant tests share.

* Publishing: the worker loads a finished adapter through SGLang's admin-optional
  ``/load_lora_adapter``, which with ``--admin-api-key`` set accepts only that key;
  the job must end ``succeeded`` and its adapter must answer. The start-up profiler
  toggles the admin-optional ``/harli/profile`` the same way (``wait_profiled``).
* Secrets: ``/server_info`` and ``/get_server_info`` must not return either key, and
  the server's log (SGLang logs ``server_args=...`` at start-up) must not print them.
* Limits: a chunked upload with many extra form fields is refused with an OpenAI-style
  413 and the server keeps serving; a slash in an id gets an OpenAI-style 404.
"""

from __future__ import annotations

import pytest
import requests

from conftest import ADMIN_KEY, API_KEY
from e2e_util import BASE_MODEL, capital_rows, client, create_job, generate, upload, wait_job


def test_a_job_publishes_its_adapter_with_both_keys_set(keyed_server):
    # SGLang really wants the admin key on /load_lora_adapter here.
    r = requests.post(keyed_server.base_url + "/load_lora_adapter", headers=keyed_server.headers,
                      json={"lora_name": "x", "lora_path": "/nonexistent"}, timeout=60)
    assert r.status_code == 401
    f = upload(keyed_server, capital_rows(4))
    job = create_job(keyed_server, f.id, n_epochs=1, batch_size=4)
    done = wait_job(keyed_server, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model in [m.id for m in client(keyed_server).models.list().data]
    out = generate(keyed_server, "<|user|>Capital of Peru?</s><|assistant|>", max_new_tokens=4,
                   lora_path=done.fine_tuned_model)
    assert out["meta_info"]["completion_tokens"] == 4
    chat = client(keyed_server).chat.completions.create(
        model=f"{BASE_MODEL}:{done.fine_tuned_model}", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": "Capital of Peru?"}])
    assert chat.usage.completion_tokens >= 1


@pytest.mark.parametrize("route", ["/server_info", "/get_server_info"])
def test_server_info_returns_neither_key(keyed_server, route):
    r = requests.get(keyed_server.base_url + route, headers=keyed_server.headers, timeout=60)
    assert r.status_code == 200, r.text
    assert API_KEY not in r.text and ADMIN_KEY not in r.text
    info = r.json()
    assert info["api_key"] == info["admin_api_key"] == "<redacted>"
    assert "--admin-api-key <redacted>" in info["launch_command"]
    assert info["served_model_name"] == BASE_MODEL  # the rest of the body is intact
    assert "internal_states" in info


def test_the_server_log_prints_neither_key(keyed_server):
    with open(keyed_server.log_path, errors="replace") as f:
        log = f.read()
    assert "server_args=" in log and "'api_key': '<redacted>'" in log
    assert API_KEY not in log and ADMIN_KEY not in log


def test_a_chunked_upload_with_many_fields_is_refused_and_serving_goes_on(keyed_server):
    def body():
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        for i in range(75_000):
            yield (b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n' % i
                   + b"z" * 4000 + b"\r\n")
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        yield b'{"prompt": "a", "completion": "b"}\n\r\n--B--\r\n'

    headers = {**keyed_server.headers, "content-type": "multipart/form-data; boundary=B"}
    try:
        r = requests.post(keyed_server.base_url + "/v1/files", data=body(), headers=headers,
                          timeout=120)
    except requests.ConnectionError:
        pytest.fail("the server closed the connection instead of answering")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    assert "parts" in r.json()["error"]["message"]
    assert generate(keyed_server, "still serving", 4)["meta_info"]["completion_tokens"] == 4
    assert client(keyed_server).files.list().data is not None


@pytest.mark.parametrize("path", ["/v1/files/file-abc%2Fdef", "/v1/files/file-abc/def/content",
                                  "/v1/fine_tuning/jobs/ftjob-a%2Fb/events"])
def test_an_id_with_a_slash_gets_an_openai_404(keyed_server, path):
    r = requests.get(keyed_server.base_url + path, headers=keyed_server.headers, timeout=60)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and r.json()["error"]["type"]
