"""The files and fine-tuning routes on a real uvicorn server, driven by the real openai client.

A FastAPI app that mounts the router stands in for SGLang's app. A pass-through
ASGI wrapper records every request and how many body bytes the app actually
read, which is how the tests see that an oversize upload is not read to its end
and that the client does not retry a refusal.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from harli_sgl.jobs.auto_hyperparameters import auto_values
from harli_sgl.jobs import ids
from harli_sgl.jobs.hyperparameters import Hyperparameters
from harli_sgl.jobs.router import DEFAULT_MAX_FILE_BYTES, make_router
from harli_sgl.jobs.store import JobStore
from harli_sgl.jobs.upload import FRAMING_ALLOWANCE, MAX_PARTS

MODEL = "harli-base"
MAX_FILE_BYTES = 64 * 1024
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
GOOD = (json.dumps(CHAT) + "\n" + json.dumps({"prompt": "2+2=", "completion": "4"}) + "\n").encode()


class Recorder:
    """ASGI pass-through that logs (method, path) and the request body bytes the app received."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.requests: list[list] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        entry = [scope["method"], scope["path"], 0]
        self.requests.append(entry)

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                entry[2] += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


class Server:
    def __init__(self, workdir: str, db_url: str | None = None) -> None:
        self.store = JobStore(workdir, db_url=db_url)
        self.changes = 0
        app = FastAPI()
        app.include_router(make_router(
            self.store, served_model_names=[MODEL], max_file_bytes=MAX_FILE_BYTES, max_lora_rank=16,
            allowed_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            on_jobs_changed=self._changed))
        # A second mount whose hooks misbehave: a callable model list and a failing callback.
        app.include_router(make_router(self.store, served_model_names=lambda: [MODEL, "other"],
                                       max_file_bytes=MAX_FILE_BYTES, max_lora_rank=16,
                                       allowed_target_modules=["q_proj"],
                                       on_jobs_changed=_raise), prefix="/flaky")
        self.recorder = Recorder(app)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.recorder, host="127.0.0.1", port=port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _changed(self) -> None:
        self.changes += 1

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.store.close()


def _raise() -> None:
    raise RuntimeError("the scheduler is unreachable")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    """One server per backend; every test of the module runs against each."""
    workdir = str(tmp_path_factory.mktemp("harli") / "work")
    if request.param == "sqlite":
        with Server(workdir) as s:
            yield s
        return
    postgres = request.getfixturevalue("postgres_server")
    name = f"harli_router_{secrets.token_hex(4)}"
    try:
        with Server(workdir, postgres.create_database(name)) as s:
            yield s
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def seeded(client) -> dict:
    """A stored file and a queued job that every bad request must leave untouched."""
    f = client.files.create(file=("seed.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id)
    return {"file": f.id, "job": job.id}


def snapshot(http: httpx.Client) -> dict:
    files = http.get("/v1/files").json()["data"]
    return {"files": files,
            "contents": {f["id"]: http.get(f"/v1/files/{f['id']}/content").content for f in files},
            "jobs": http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]}


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None,
                        fragment: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    if fragment is not None:
        assert fragment in error["message"]
    if code is not None:
        assert error["code"] == code
    assert response.headers["x-should-retry"] == "false"
    return error


def multipart(data: bytes, purpose: str | None = "fine-tune", name: str = "train.jsonl") -> dict:
    return {"files": {"file": (name, data, "application/jsonl")},
            "data": {} if purpose is None else {"purpose": purpose}}


# ---------------------------------------------------------------------------- happy paths

def test_default_upload_limit_is_64_mib():
    assert DEFAULT_MAX_FILE_BYTES == 64 * 1024 * 1024


def test_files_with_the_openai_client(client, server):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    assert ids.is_valid_id(f.id, ids.FILE)
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == (
        "file", len(GOOD), "train.jsonl", "fine-tune", "processed")
    assert client.files.retrieve(f.id) == f
    assert client.files.content(f.id).read() == GOOD
    assert f.id in [x.id for x in client.files.list()]
    assert [x.id for x in client.files.list(purpose="fine-tune", limit=1)][0] == f.id
    assert open(server.store.file_path(f.id), "rb").read() == GOOD
    other = client.files.create(file=("notes.txt", b"anything at all"), purpose="user_data")
    assert other.purpose == "user_data"
    deleted = client.files.delete(other.id)
    assert deleted.deleted and deleted.id == other.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(other.id)


def test_upload_of_exactly_the_limit_is_accepted(client):
    frame = json.dumps({"prompt": "", "completion": "c"}).encode() + b"\n"
    data = frame.replace(b'""', b'"' + b"x" * (MAX_FILE_BYTES - len(frame)) + b'"')
    assert len(data) == MAX_FILE_BYTES
    assert client.files.create(file=("max.jsonl", data), purpose="fine-tune").bytes == MAX_FILE_BYTES


def test_job_lifecycle_with_the_openai_client(client, server):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    v = client.files.create(file=("val.jsonl", GOOD), purpose="fine-tune")
    changes = server.changes
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=f.id, validation_file=v.id, suffix="support-bot", seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        metadata={"team": "search"},
        extra_body={"lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]}})
    assert server.changes == changes + 1
    assert ids.is_valid_id(job.id, ids.JOB)
    assert (job.object, job.status, job.model, job.training_file, job.validation_file) == (
        "fine_tuning.job", "queued", MODEL, f.id, v.id)
    assert (job.seed, job.metadata, job.user_provided_suffix) == (7, {"team": "search"}, "support-bot")
    # "auto" follows the data set's size: 2 examples train in batches of 1.
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 1
    assert job.hyperparameters.learning_rate_multiplier == 0.5
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.lora == {"r": 16, "alpha": 32.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0}
    assert job.error is None and job.fine_tuned_model is None and job.organization_id == "default"
    assert client.fine_tuning.jobs.retrieve(job.id) == job
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == job.id

    # The worker's side, through the same store: run, progress, checkpoint, success.
    store = server.store
    store.set_status(job.id, "running")
    store.update_progress(job.id, trained_tokens=100, step=1, total_steps=2,
                          estimated_finish=1_900_000_000)
    assert client.fine_tuning.jobs.retrieve(job.id).estimated_finish == 1_900_000_000
    store.add_event(job.id, "info", "Step 1/2: training loss=1.5", {"step": 1, "train_loss": 1.5},
                    type="metrics")
    full = {"step": 1, "train_loss": 1.5, "train_mean_token_accuracy": 0.5, "valid_loss": 1.75,
            "valid_mean_token_accuracy": 0.25, "full_valid_loss": 1.75,
            "full_valid_mean_token_accuracy": 0.25}
    store.add_checkpoint(job.id, 1, "/ckpt/1", full)
    results = store.create_file("step_metrics.csv", "fine-tune-results", b"step\n1\n")["id"]
    store.set_status(job.id, "succeeded", trained_tokens=200, result_files=[results])

    # The objects as served validate against the client's own types, every field filled.
    raw = httpx.get(f"{server.base}/v1/fine_tuning/jobs/{job.id}",
                    headers={"Authorization": "Bearer x"}).json()
    validated = FineTuningJob.model_validate(raw)
    assert validated.result_files == [results] and validated.estimated_finish is None  # finished
    assert client.files.content(results).content == b"step\n1\n"
    assert FileObject.model_validate(client.files.retrieve(results).model_dump()).purpose == \
        "fine-tune-results"
    raw = httpx.get(f"{server.base}/v1/fine_tuning/jobs/{job.id}/checkpoints",
                    headers={"Authorization": "Bearer x"}).json()["data"][0]
    assert FineTuningJobCheckpoint.model_validate(raw).metrics.model_dump() == full

    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.trained_tokens == 200 and done.finished_at
    assert done.fine_tuned_model == ids.fine_tuned_model_name(job.id, "support-bot", MODEL, "default")
    assert done.fine_tuned_model.startswith(f"ft:{MODEL}:default:support-bot:")
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert events[0].message.startswith("The job has successfully completed")
    assert any(e.type == "metrics" and e.data == {"step": 1, "train_loss": 1.5} for e in events)
    assert events[-1].message == f"Created fine-tuning job: {job.id}"
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(checkpoints) == 1
    c = checkpoints[0]
    assert (c.object, c.step_number, c.fine_tuning_job_id) == ("fine_tuning.job.checkpoint", 1, job.id)
    assert c.metrics.step == 1 and c.metrics.train_loss == 1.5
    assert c.metrics.full_valid_mean_token_accuracy == 0.25
    assert c.fine_tuned_model_checkpoint == done.fine_tuned_model + ":ckpt-step-1"

    with pytest.raises(openai.BadRequestError, match="already succeeded"):
        client.fine_tuning.jobs.cancel(job.id)


def test_method_form_and_cancel(client, server):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=f.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}})
    assert job.hyperparameters.n_epochs == 5 and job.hyperparameters.batch_size == 1
    assert job.lora["r"] == 8 and job.lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    changes = server.changes
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert server.changes == changes + 1
    assert server.store.is_cancelled(job.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.cancel(job.id)
    assert err.value.status_code == 400 and "already been cancelled" in err.value.message


PREFERENCE = (json.dumps({"input": {"messages": [{"role": "user", "content": "2+2?"}]},
                         "preferred_output": [{"role": "assistant", "content": "4"}],
                         "non_preferred_output": [{"role": "assistant", "content": "5"}]})
              + "\n").encode() * 2


def test_a_dpo_job_with_the_openai_client(client, server):
    f = client.files.create(file=("prefs.jsonl", PREFERENCE), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}})
    assert job.status == "queued" and job.method.type == "dpo"
    hp = job.method.dpo.hyperparameters
    # The two left out resolve from the file's size (2 pairs) by the "auto" rule, as a
    # supervised job's do; beta and n_epochs are as given.
    auto = auto_values(2)
    assert (hp.beta, hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (
        0.2, 2, auto["batch_size"], auto["learning_rate_multiplier"])
    assert job.method.supervised is None
    assert job.hyperparameters.model_dump() == {
        "batch_size": auto["batch_size"], "learning_rate_multiplier": auto["learning_rate_multiplier"],
        "n_epochs": 2}
    assert client.fine_tuning.jobs.retrieve(job.id) == job
    stored = Hyperparameters.from_job(server.store.get_job(job.id))  # what the worker trains
    assert (stored.method, stored.beta, stored.n_epochs) == ("dpo", 0.2, 2)
    default = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id,
                                             method={"type": "dpo"})
    assert default.method.dpo.hyperparameters.beta == 0.1
    for j in (job, default):
        client.fine_tuning.jobs.cancel(j.id)


@pytest.mark.parametrize("data, method, holds", [
    (PREFERENCE, {"type": "supervised"}, "holds preference (DPO) records, but the job's method "
                                         "is 'supervised'"),
    (GOOD, {"type": "dpo"}, "holds supervised records, but the job's method is 'dpo'"),
])
def test_a_file_of_the_other_method_fails_the_job(client, data, method, holds):
    f = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, method=method)
    assert job.status == "failed"
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert f"The training file {f.id} {holds}" in job.error.message


def test_preference_upload_errors_name_the_line_and_field(http, seeded):
    bad = PREFERENCE + b'{"input": {"messages": []}, "preferred_output": [], ' \
                       b'"non_preferred_output": []}\n'
    r = http.post("/v1/files", **multipart(bad))
    assert_openai_error(r, 400, "file", "line 3: 'input.messages' is empty")
    r = http.post("/v1/files", **multipart(PREFERENCE + GOOD))
    assert_openai_error(r, 400, "file", "line 3: a supervised record in a file of preference")


def test_a_dpo_job_validates_on_preference_pairs_and_refuses_supervised_ones(client, server):
    f = client.files.create(file=("prefs.jsonl", PREFERENCE), purpose="fine-tune")
    held_out = client.files.create(file=("held-out.jsonl", PREFERENCE[: len(PREFERENCE) // 2]),
                                   purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id,
                                         validation_file=held_out.id, method={"type": "dpo"})
    assert (job.status, job.validation_file, job.error) == ("queued", held_out.id, None)
    assert FineTuningJob.model_validate(job.model_dump()).method.type == "dpo"
    assert server.store.get_job(job.id)["validation_file"] == held_out.id  # what the worker reads
    client.fine_tuning.jobs.cancel(job.id)

    # A file of the other kind fails the job as a training file of it does, naming the field.
    supervised = client.files.create(file=("val.jsonl", GOOD), purpose="fine-tune")
    for training, validation, holds in (
            (f.id, supervised.id, "holds supervised records, but the job's method is 'dpo'"),
            (supervised.id, held_out.id, "holds preference (DPO) records, but the job's method "
                                         "is 'supervised'")):
        method = {"type": "dpo" if training == f.id else "supervised"}
        failed = client.fine_tuning.jobs.create(model=MODEL, training_file=training,
                                                validation_file=validation, method=method)
        assert failed.status == "failed"
        assert (failed.error.code, failed.error.param) == ("invalid_validation_file",
                                                           "validation_file")
        assert f"The validation file {validation} {holds}" in failed.error.message


def test_pagination_with_after(client, server):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    made = [client.fine_tuning.jobs.create(model=MODEL, training_file=f.id).id for _ in range(7)]
    first = client.fine_tuning.jobs.list(limit=3)
    assert [j.id for j in first.data] == made[::-1][:3] and first.has_more
    second = client.fine_tuning.jobs.list(limit=3, after=first.data[-1].id)
    assert [j.id for j in second.data] == made[::-1][3:6]
    # The client's auto-pagination follows `after` to the end without repeats.
    every = [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert every[:7] == made[::-1] and len(every) == len(set(every))
    for job_id in made[:5]:
        server.store.add_event(job_id, "info", "extra")
    events = list(client.fine_tuning.jobs.list_events(made[0], limit=1))  # one per page
    assert [e.message for e in events] == [
        "extra", "Files validated, moving job to queued state", f"Created fine-tuning job: {made[0]}"]
    assert len({e.id for e in events}) == 3
    files = [x.id for x in client.files.list(limit=2)]
    assert len(files) == len(set(files)) and f.id in files


def test_a_failing_jobs_changed_hook_does_not_fail_the_request(server):
    flaky = openai.OpenAI(base_url=server.base + "/flaky/v1", api_key="unused", max_retries=0)
    f = flaky.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = flaky.fine_tuning.jobs.create(model="other", training_file=f.id)
    assert job.status == "queued" and job.lora["target_modules"] == ["q_proj"]
    assert flaky.fine_tuning.jobs.cancel(job.id).status == "cancelled"


@pytest.mark.parametrize("damage, fragment", [
    (lambda data: b"{" * len(data), "line 1: malformed JSON"),
    (lambda data: data[:-3], "bytes"),
    (None, "missing"),
])
def test_stored_file_rechecked_at_job_creation(client, server, damage, fragment):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    path = server.store.file_path(f.id)
    if damage is None:
        os.unlink(path)
    else:
        with open(path, "wb") as fh:
            fh.write(damage(GOOD))
    changes = server.changes
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert f.id in job.error.message and fragment in job.error.message
    assert server.changes == changes
    assert server.store.get_job(job.id)["status"] == "failed"


def test_jobs_left_validating_are_finished_when_the_router_is_built(tmp_path, db_url):
    store = JobStore(str(tmp_path / "work"), db_url=db_url)
    good = store.create_file("good.jsonl", "fine-tune", GOOD)["id"]
    bad = store.create_file("bad.jsonl", "fine-tune", GOOD)["id"]
    with open(store.file_path(bad), "wb") as fh:
        fh.write(b"[" * len(GOOD))
    args = dict(model=MODEL, validation_file=None, suffix=None, seed=0,
                hyperparameters={"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0},
                lora={"r": 8, "alpha": 16.0, "target_modules": ["q_proj"], "dropout": 0.0},
                metadata=None)
    stuck_good = store.create_job(training_file=good, **args)["id"]
    stuck_bad = store.create_job(training_file=bad, **args)["id"]
    make_router(store, served_model_names=[MODEL])
    assert store.get_job(stuck_good)["status"] == "queued"
    failed = store.get_job(stuck_bad)
    assert failed["status"] == "failed" and failed["error"]["param"] == "training_file"
    assert "line 1" in failed["error"]["message"]
    store.close()


# ---------------------------------------------------------------------------- bad input

def test_malformed_jsonl_names_the_line(http, seeded):
    before = snapshot(http)
    bad = GOOD + b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    error = assert_openai_error(http.post("/v1/files", **multipart(bad)), 400, "file", "line 3",
                                "invalid_file_format")
    assert "no assistant message" in error["message"]
    assert_openai_error(http.post("/v1/files", **multipart(GOOD + b"{not json\n")), 400, "file",
                        "line 3: malformed JSON")
    assert snapshot(http) == before


def test_malformed_jsonl_with_the_openai_client(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("bad.jsonl", b'{"prompt": "a", "completion": "b"}\n[1]\n'),
                            purpose="fine-tune")
    assert err.value.status_code == 400 and "line 2" in err.value.message
    assert err.value.param == "file"


@pytest.mark.parametrize("data, purpose", [(b"", "fine-tune"), (b"", "batch")])
def test_empty_file(http, seeded, data, purpose):
    before = snapshot(http)
    assert_openai_error(http.post("/v1/files", **multipart(data, purpose)), 400, "file", "empty",
                        "empty_file")
    assert snapshot(http) == before


@pytest.mark.parametrize("size", [MAX_FILE_BYTES + 1, 10 * MAX_FILE_BYTES])
def test_oversize_upload_with_the_openai_client(client, http, server, seeded, size):
    before = snapshot(http)
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", b"x" * size), purpose="fine-tune")
    assert err.value.status_code == 413
    assert err.value.body["code"] == "payload_too_large"
    assert str(MAX_FILE_BYTES) in err.value.message
    read_by_app = [entry[2] for entry in server.recorder.requests
                   if entry[:2] == ["POST", "/v1/files"]][-1]
    if size > MAX_FILE_BYTES + FRAMING_ALLOWANCE:
        assert read_by_app == 0  # refused on its Content-Length alone
    else:
        assert read_by_app <= size + FRAMING_ALLOWANCE
    assert snapshot(http) == before


def test_oversize_streamed_upload_is_not_read_to_the_end(http, server, seeded):
    """Chunked body without Content-Length: the app stops reading just past the limit."""
    before = snapshot(http)
    total = 8 * 1024 * 1024

    def body() -> Iterator[bytes]:
        yield (b'--BOUNDARY\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
               b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
               b"Content-Type: application/jsonl\r\n\r\n")
        for _ in range(total // 65536):
            yield b"y" * 65536
        yield b"\r\n--BOUNDARY--\r\n"

    response = http.post("/v1/files", content=body(),
                         headers={"content-type": "multipart/form-data; boundary=BOUNDARY"})
    assert_openai_error(response, 413, None, "exceeds the limit", "payload_too_large")
    read_by_app = [entry[2] for entry in server.recorder.requests
                   if entry[:2] == ["POST", "/v1/files"]][-1]
    assert MAX_FILE_BYTES < read_by_app < MAX_FILE_BYTES + 1024 * 1024 < total
    assert not [n for n in os.listdir(server.store.files_dir) if n.endswith(".tmp")]
    assert snapshot(http) == before


def _read_by_app(server) -> int:
    return [entry[2] for entry in server.recorder.requests if entry[:2] == ["POST", "/v1/files"]][-1]


@pytest.mark.parametrize("shape", ["many_fields", "huge_preamble", "huge_part_headers"])
def test_the_whole_chunked_upload_is_bounded(http, server, seeded, shape):
    """Issue 12: 75,000 extra 4 KB fields in a chunked body were read and kept. Now the read
    stops near the limit, whatever part of the body grows, with an OpenAI-style 413."""
    before = snapshot(http)
    field = b"z" * 4000
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        if shape == "huge_preamble":  # bytes before the first boundary belong to no part
            for _ in range(200):
                sent += 65536
                yield b"p" * 65536
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        if shape == "huge_part_headers":
            yield b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: "
            for _ in range(200):
                sent += 65536
                yield b"h" * 65536
            yield b"\r\n\r\nv\r\n"
        for i in range(20_000):
            sent += len(field)
            yield b'--B\r\nContent-Disposition: form-data; name="extra%d"\r\n\r\n' % i + field + b"\r\n"
        yield (b'--B\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
               + GOOD + b"\r\n--B--\r\n")

    response = http.post("/v1/files", content=body(),
                         headers={"content-type": "multipart/form-data; boundary=B"})
    if shape == "many_fields":
        error = assert_openai_error(response, 413, None, code="payload_too_large")
        assert f"more than {MAX_PARTS} parts" in error["message"], error["message"]
    else:  # the multipart parser refuses these shapes (400), unless the body bound hits first
        assert response.status_code in (400, 413), response.text
        assert_openai_error(response, response.status_code, None)
    assert _read_by_app(server) < MAX_FILE_BYTES + FRAMING_ALLOWANCE + 256 * 1024
    assert snapshot(http) == before  # nothing stored, and the server still serves


def test_a_form_with_a_few_extra_fields_is_still_accepted(http, seeded):
    response = http.post("/v1/files", files={"file": ("t.jsonl", GOOD, "application/jsonl")},
                         data={"purpose": "fine-tune", "a": "1", "b": "2"})
    assert response.status_code == 200, response.text
    assert http.delete(f"/v1/files/{response.json()['id']}").status_code == 200


@pytest.mark.parametrize("method, raw_path", [
    ("GET", b"/v1/files/file-abc/def"), ("GET", b"/v1/files/file-abc%2Fdef"),
    ("GET", b"/v1/files/file-abc%2fdef/content"), ("DELETE", b"/v1/files/a/b"),
    ("GET", b"/v1/files/x/y/content"), ("GET", b"/v1/fine_tuning/jobs/ftjob-a%2Fb"),
    ("POST", b"/v1/fine_tuning/jobs/ftjob-a/b/cancel"), ("GET", b"/v1/fine_tuning/jobs/a/b/events"),
    ("GET", b"/v1/fine_tuning/unknown"), ("PUT", b"/v1/files/file-abc"),
    ("DELETE", b"/v1/fine_tuning/jobs/{job}"),
])
def test_ids_with_a_slash_and_unknown_routes_get_an_openai_404(http, seeded, method, raw_path):
    before = snapshot(http)
    request = http.build_request(method, "/")
    request.url = request.url.copy_with(raw_path=raw_path.replace(b"{job}", seeded["job"].encode()))
    error = assert_openai_error(http.send(request), 404, None, code="not_found")
    assert error["message"].startswith(f"No such object or route: {method} /v1/")
    assert snapshot(http) == before


@pytest.mark.parametrize("kwargs, param, fragment", [
    (multipart(GOOD, purpose=None), "purpose", "Missing required parameter"),
    (multipart(GOOD, purpose="fine-tune-results"), "purpose", "Invalid purpose"),
    ({"data": {"purpose": "fine-tune"}, "files": {"other": ("a", b"b")}}, "file", "missing the 'file'"),
    ({"content": GOOD, "headers": {"content-type": "application/jsonl"}}, None, "multipart/form-data"),
    ({"content": b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune",
      "headers": {"content-type": "multipart/form-data; boundary=B"}}, None, "malformed multipart"),
])
def test_bad_upload_forms(http, seeded, kwargs, param, fragment):
    before = snapshot(http)
    assert_openai_error(http.post("/v1/files", **kwargs), 400, param, fragment)
    assert snapshot(http) == before


def test_an_oversized_form_field_is_a_413_like_every_other_bound(http, seeded):
    before = snapshot(http)
    assert_openai_error(http.post("/v1/files", **multipart(GOOD, purpose="x" * 5000)), 413,
                        "purpose", "longer than", code="payload_too_large")
    assert snapshot(http) == before


def test_unknown_model_with_the_openai_client(client, seeded):
    with pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=seeded["file"])
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    assert err.value.param == "model" and "gpt-4o-mini" in err.value.message


def job_body(seeded: dict, **fields) -> dict:
    body = {"model": MODEL, "training_file": seeded["file"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


BAD_JOBS = [
    # (fields, status, param, fragment, code)
    ({"model": "nope"}, 404, "model", "does not exist", "model_not_found"),
    ({"model": ...}, 400, "model", "Missing required parameter", None),
    ({"training_file": ...}, 400, "training_file", "Missing required parameter", None),
    ({"hyperparameters": {"n_epochs": 0}}, 400, "hyperparameters.n_epochs", "between 1 and 50",
     "invalid_hyperparameters"),
    ({"hyperparameters": {"batch_size": 1000}}, 400, "hyperparameters.batch_size", "256", None),
    ({"hyperparameters": {"learning_rate_multiplier": -2}}, 400,
     "hyperparameters.learning_rate_multiplier", "(0, 10]", None),
    ({"hyperparameters": {"n_epochs": "many"}}, 400, "hyperparameters.n_epochs", "integer", None),
    ({"hyperparameters": {"epochs": 2}}, 400, "hyperparameters.epochs", "unknown", None),
    ({"method": {"type": "reinforcement"}}, 400, "method.type", "'supervised' or 'dpo'", None),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}}, 400,
     "method.dpo.hyperparameters.beta", "(0, 2]", "invalid_hyperparameters"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}}, 400,
     "method.supervised.hyperparameters.batch_size", "between", None),
    ({"lora": {"r": 64}}, 400, "lora.r", "between 1 and 16", None),
    ({"lora": {"target_modules": ["gate_proj"]}}, 400, "lora.target_modules", "not allowed", None),
    ({"lora": {"dropout": 2}}, 400, "lora.dropout", "[0, 1)", None),
    ({"suffix": "a/b"}, 400, "suffix", "suffix", None),
    ({"seed": "1"}, 400, "seed", "integer", None),
    ({"metadata": {"k": 1}}, 400, "metadata.k", "string", None),
    ({"integrations": [{"type": "wandb"}]}, 400, "integrations", "not supported", None),
    ({"hyperparameter": {}}, 400, "hyperparameter", "Unrecognized request argument", None),
    ({"training_file": "../../etc/passwd"}, 400, "training_file", "does not exist",
     "invalid_training_file"),
    ({"training_file": "file-..%2F..%2Fharli.db"}, 400, "training_file", "does not exist", None),
    ({"training_file": "file-" + "0" * 24}, 400, "training_file", "does not exist", None),
    ({"training_file": 5}, 400, "training_file", "string", None),
    ({"validation_file": "../harli.db"}, 400, "validation_file", "does not exist",
     "invalid_validation_file"),
]


@pytest.mark.parametrize("fields, status, param, fragment, code", BAD_JOBS)
def test_bad_job_requests(http, server, seeded, fields, status, param, fragment, code):
    before = snapshot(http)
    changes = server.changes
    response = http.post("/v1/fine_tuning/jobs", json=job_body(seeded, **fields))
    assert_openai_error(response, status, param, fragment, code)
    assert snapshot(http) == before and server.changes == changes


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_files_of_another_purpose_are_not_training_data(client, http, seeded, field):
    other = client.files.create(file=("batch.jsonl", GOOD), purpose="batch")
    before = snapshot(http)
    response = http.post("/v1/fine_tuning/jobs", json=job_body(seeded, **{field: other.id}))
    assert_openai_error(response, 400, field, "purpose 'batch'", f"invalid_{field}")
    assert snapshot(http) == before


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"", b"\xff"])
def test_unparseable_job_bodies(http, seeded, content):
    before = snapshot(http)
    response = http.post("/v1/fine_tuning/jobs", content=content,
                         headers={"content-type": "application/json"})
    assert_openai_error(response, 400)
    assert snapshot(http) == before


def test_oversize_job_body(http, seeded):
    body = json.dumps(job_body(seeded, metadata={"k": "v" * (2 * 1024 * 1024)})).encode()
    assert_openai_error(http.post("/v1/fine_tuning/jobs", content=body), 413, None, "limit")


@pytest.mark.parametrize("path", [
    "/v1/fine_tuning/jobs/{missing}", "/v1/fine_tuning/jobs/{missing}/events",
    "/v1/fine_tuning/jobs/{missing}/checkpoints", "/v1/fine_tuning/jobs/ftjob-..",
    "/v1/fine_tuning/jobs/ftjob-..%5C..", "/v1/files/{missing_file}",
    "/v1/files/{missing_file}/content", "/v1/files/file-..", "/v1/files/%2e%2e/content",
    "/v1/files/{job}",
])
def test_unknown_ids_are_404(http, seeded, path):
    before = snapshot(http)
    url = path.format(missing=ids.new_id(ids.JOB), missing_file=ids.new_id(ids.FILE), job=seeded["job"])
    assert_openai_error(http.get(url), 404, None, "No such", "not_found")
    assert snapshot(http) == before


def test_unknown_ids_via_the_openai_client(client):
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve(ids.new_id(ids.JOB))
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel(ids.new_id(ids.JOB))
    with pytest.raises(openai.NotFoundError):
        client.files.delete(ids.new_id(ids.FILE))
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-..")


@pytest.mark.parametrize("method, raw_path", [
    ("GET", b"/v1/files/../../etc/passwd"),
    ("GET", b"/v1/files/..%2F..%2Fetc%2Fpasswd/content"),
    ("DELETE", b"/v1/files/..%2Fharli.db"),
    ("DELETE", b"/v1/files/%2e%2e"),
    ("DELETE", b"/v1/files/file-..%2F"),
    ("POST", b"/v1/fine_tuning/jobs/..%2F..%2Fharli.db/cancel"),
])
def test_path_tricks_touch_nothing(http, server, seeded, method, raw_path):
    """Whether the route matches (our 404) or not (the app's 404), nothing is read or removed."""
    before = snapshot(http)
    kept = sorted(os.listdir(server.store.workdir))  # harli.db on SQLite, the files directory
    request = http.build_request(method, "/")
    request.url = request.url.copy_with(raw_path=raw_path)
    # The app may redirect 'x/' to 'x' first; wherever it lands must be a 404.
    response = http.send(request, follow_redirects=True)
    assert response.status_code == 404
    assert b"root:" not in response.content
    assert sorted(os.listdir(server.store.workdir)) == kept and snapshot(http) == before


@pytest.mark.parametrize("query, param", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "abc"}, "limit"),
    ({"after": "ftjob-" + "0" * 24}, "after"), ({"after": "../x"}, "after"),
])
def test_bad_list_parameters(http, seeded, query, param):
    assert_openai_error(http.get("/v1/fine_tuning/jobs", params=query), 400, param)


def test_bad_list_parameters_for_events_files_and_checkpoints(http, seeded):
    job = seeded["job"]
    assert_openai_error(http.get(f"/v1/fine_tuning/jobs/{job}/events", params={"limit": 1000}),
                        400, "limit")
    assert_openai_error(http.get(f"/v1/fine_tuning/jobs/{job}/checkpoints",
                                 params={"after": ids.new_id(ids.CHECKPOINT)}), 400, "after")
    assert_openai_error(http.get("/v1/files", params={"order": "sideways"}), 400, "order")
    assert_openai_error(http.get("/v1/files", params={"after": "file-.."}), 400, "after")


def test_deleting_a_file_in_use_is_refused_once_without_retries(server, seeded):
    # Default retries on: the x-should-retry header must stop the client retrying the 409.
    retrying = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=2)
    path = f"/v1/files/{seeded['file']}"
    sent = sum(1 for m, p, _ in server.recorder.requests if (m, p) == ("DELETE", path))
    with pytest.raises(openai.ConflictError) as err:
        retrying.files.delete(seeded["file"])
    assert err.value.status_code == 409 and seeded["job"] in err.value.message
    assert sum(1 for m, p, _ in server.recorder.requests if (m, p) == ("DELETE", path)) == sent + 1
    assert retrying.files.retrieve(seeded["file"]).id == seeded["file"]


def test_seeded_data_survived_everything(client, server, seeded):
    assert client.files.content(seeded["file"]).read() == GOOD
    assert client.fine_tuning.jobs.retrieve(seeded["job"]).training_file == seeded["file"]
    assert server.thread.is_alive()


def test_auto_hyperparameters_follow_the_training_files_size(client):
    rows = "".join(json.dumps(CHAT) + "\n" for _ in range(40)).encode()  # 40 examples
    f = client.files.create(file=("train.jsonl", rows), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id)  # all "auto"
    hp = job.hyperparameters  # 3 epochs train 120 >= 100 examples; 0.2% of 40 < 1
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (3, 1, 0.5)
    small = client.files.create(file=("small.jsonl", GOOD), purpose="fine-tune")  # 2 examples
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=small.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": "auto", "batch_size": 2}}})
    hp = job.method.supervised.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (25, 2, 0.5)
    assert client.fine_tuning.jobs.retrieve(job.id).hyperparameters.n_epochs == 25  # stored so
