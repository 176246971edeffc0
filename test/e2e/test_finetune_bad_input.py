"""Bad finetune input gets a precise OpenAI-style 4xx; nothing stored is lost; serving goes on."""

from __future__ import annotations

import requests

from e2e_util import BASE_MODEL, capital_rows, client, generate, jsonl, upload


def post_file(server, data: bytes, purpose="fine-tune", name="train.jsonl"):
    return requests.post(server.base_url + "/v1/files", headers=server.headers, timeout=60,
                         files={"file": (name, data)}, data={"purpose": purpose})


def post_job(server, **body):
    return requests.post(server.base_url + "/v1/fine_tuning/jobs", headers=server.headers,
                         json={"model": BASE_MODEL, **body}, timeout=60)


def error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    return err


def test_bad_input_is_refused_precisely_and_nothing_is_lost(harli_server):
    good = upload(harli_server, capital_rows(4))
    good_bytes = client(harli_server).files.content(good.id).read()
    other = upload(harli_server, b'{"anything": 1}\n', purpose="assistants", name="notes.jsonl")

    # Malformed JSONL: the error names the line.
    bad = jsonl(capital_rows(2)) + b'{"messages": [\n'
    assert "line 3" in error(post_file(harli_server, bad), 400)["message"]
    # A record of neither format, on line 2.
    bad = jsonl(capital_rows(1)) + b'{"text": "hi"}\n'
    assert "line 2" in error(post_file(harli_server, bad), 400)["message"]
    # Empty file.
    error(post_file(harli_server, b""), 400)
    # Over the size limit (the session server runs with a 1 MiB limit).
    big = jsonl(capital_rows()) * (2**20 // len(jsonl(capital_rows())) + 1)
    error(post_file(harli_server, big), 413)
    # Unknown model.
    r = requests.post(harli_server.base_url + "/v1/fine_tuning/jobs", headers=harli_server.headers,
                      json={"model": "gpt-5", "training_file": good.id}, timeout=60)
    assert error(r, 404)["code"] == "model_not_found"
    # Bad hyperparameters name the field.
    err = error(post_job(harli_server, training_file=good.id, hyperparameters={"n_epochs": 0}), 400)
    assert "n_epochs" in err["param"]
    err = error(post_job(harli_server, training_file=good.id,
                         hyperparameters={"learning_rate_multiplier": -1}), 400)
    assert "learning_rate_multiplier" in err["param"]
    err = error(post_job(harli_server, training_file=good.id, lora={"r": 4096}), 400)
    assert "lora" in err["param"]
    # Missing training file, and a file uploaded for another purpose.
    assert error(post_job(harli_server, training_file="file-0123456789abcdef01234567"), 400)["param"] \
        == "training_file"
    assert error(post_job(harli_server, training_file=other.id), 400)["param"] == "training_file"
    # Ids that look like paths never reach the filesystem.
    # (Literal "/../" segments are resolved by the HTTP client itself, so they are sent encoded.)
    for bad_id in ("..%2F..%2Fetc%2Fpasswd", "file-..%2F..%2Fharli.db", "file-abc%2F..",
                   "ftjob-..%5c..%5cx"):
        for path in (f"/v1/files/{bad_id}", f"/v1/files/{bad_id}/content",
                     f"/v1/fine_tuning/jobs/{bad_id}"):
            r = requests.get(harli_server.base_url + path, headers=harli_server.headers, timeout=30)
            assert r.status_code in (400, 404), (path, r.status_code)
            assert "root:" not in r.text
    r = requests.post(harli_server.base_url + "/v1/fine_tuning/jobs/..%2F..%2Fx/cancel",
                      headers=harli_server.headers, timeout=30)
    assert r.status_code in (400, 404)

    # Nothing already stored was lost, and the server still serves.
    assert client(harli_server).files.content(good.id).read() == good_bytes
    ids = {f.id for f in client(harli_server).files.list()}
    assert {good.id, other.id} <= ids
    assert generate(harli_server, "after bad input", 4)["meta_info"]["completion_tokens"] == 4


def test_training_data_too_long_fails_the_job_precisely(harli_server):
    # Valid JSON and shape, but the prompt alone exceeds the training sequence limit:
    # no supervised token survives truncation, so the job fails naming the line.
    rows = capital_rows(2) + [{"prompt": "x" * 5000, "completion": "y"}]
    f = upload(harli_server, rows)
    job = client(harli_server).fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    from e2e_util import wait_job

    done = wait_job(harli_server, job.id)
    assert done.status == "failed"
    assert "line 3" in done.error.message
    assert generate(harli_server, "after a failed job", 4)["meta_info"]["completion_tokens"] == 4
