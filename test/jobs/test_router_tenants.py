"""The files and fine-tuning routes for two tenants, with the real openai client, on both backends.

The app mounts the router with ``principal_of`` reading the tenant from a test
header (on the real server the tenant-auth middleware decides it from the key;
see test/e2e/test_tenants.py). Everything one tenant made answers the other
404, with the same OpenAI-style body as an id that never existed.
"""

from __future__ import annotations

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

from harli_sgl.jobs import ids
from harli_sgl.jobs.principal import TENANT, Principal
from harli_sgl.jobs.router import make_router
from harli_sgl.jobs.store import JobStore
from harli_sgl.jobs.tenants import Limits

MODEL = "harli-base"
GOOD = b'{"prompt": "2+2=", "completion": "4"}\n'
QUOTA_BYTES = 10 * len(GOOD)


class TenantServer:
    def __init__(self, workdir: str, db_url: str | None) -> None:
        self.store = JobStore(workdir, db_url=db_url,
                              default_limits=Limits(max_stored_bytes=QUOTA_BYTES, max_queued_jobs=3))
        app = FastAPI()
        app.include_router(make_router(
            self.store, served_model_names=[MODEL],
            principal_of=lambda request: Principal(request.headers["x-test-tenant"], TENANT)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline
            time.sleep(0.02)

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0,
                             default_headers={"x-test-tenant": tenant})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory) -> Iterator[TenantServer]:
    workdir = str(tmp_path_factory.mktemp("tenants") / "work")
    if request.param == "sqlite":
        s = TenantServer(workdir, None)
        yield s
        s.close()
        return
    postgres = request.getfixturevalue("postgres_server")
    name = f"harli_tenants_{secrets.token_hex(4)}"
    try:
        s = TenantServer(workdir, postgres.create_database(name))
        yield s
        s.close()
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def alphas(server) -> dict:
    """Alpha's file and a job on it (with a checkpoint)."""
    alpha = server.client("alpha")
    f = alpha.files.create(file=("a.jsonl", GOOD), purpose="fine-tune")
    job = alpha.fine_tuning.jobs.create(model=MODEL, training_file=f.id)
    server.store.add_checkpoint(job.id, 1, "/ckpt/1")
    return {"file": f.id, "job": job.id}


def not_found_body(call) -> dict:
    with pytest.raises(openai.NotFoundError) as err:
        call()
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == "not_found"
    return body


def test_another_tenants_objects_answer_404_like_missing_ones(server, alphas):
    beta = server.client("beta")
    f, job = alphas["file"], alphas["job"]
    missing_file, missing_job = ids.new_id(ids.FILE), ids.new_id(ids.JOB)
    for call, missing in (
            (lambda i: beta.files.retrieve(i), missing_file),
            (lambda i: beta.files.content(i), missing_file),
            (lambda i: beta.files.delete(i), missing_file)):
        theirs, absent = not_found_body(lambda: call(f)), not_found_body(lambda: call(missing))
        assert theirs["message"].replace(f, "ID") == absent["message"].replace(missing, "ID")
    for call in (beta.fine_tuning.jobs.retrieve, beta.fine_tuning.jobs.cancel,
                 beta.fine_tuning.jobs.list_events, beta.fine_tuning.jobs.checkpoints.list):
        theirs = not_found_body(lambda: call(job))
        absent = not_found_body(lambda: call(missing_job))
        assert theirs["message"].replace(job, "ID") == absent["message"].replace(missing_job, "ID")
    assert beta.files.list().data == [] and beta.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.BadRequestError) as err:  # not even as training data
        beta.fine_tuning.jobs.create(model=MODEL, training_file=f)
    assert err.value.body["code"] == "invalid_training_file"
    # Alpha still has everything, untouched.
    alpha = server.client("alpha")
    assert alpha.files.content(f).read() == GOOD
    assert alpha.fine_tuning.jobs.retrieve(job).status == "queued"
    assert [c.step_number for c in alpha.fine_tuning.jobs.checkpoints.list(job).data] == [1]
    assert alpha.fine_tuning.jobs.retrieve(job).organization_id == "alpha"


def test_a_tenant_sees_no_server_path_in_its_checkpoints(server, alphas):
    mine = server.client("alpha").fine_tuning.jobs.checkpoints.list(alphas["job"]).data
    assert mine and all("path" not in c.model_dump() for c in mine)


def test_quotas_answer_429_naming_the_limit(server):
    gamma = server.client("gamma")
    for _ in range(QUOTA_BYTES // len(GOOD)):
        last = gamma.files.create(file=("g.jsonl", GOOD), purpose="fine-tune")
    with pytest.raises(openai.RateLimitError) as err:
        gamma.files.create(file=("g.jsonl", GOOD), purpose="fine-tune")
    body = err.value.body
    assert body["code"] == "quota_exceeded" and body["param"] == "max_stored_bytes"
    assert "max_stored_bytes" in body["message"] and str(QUOTA_BYTES) in body["message"]
    assert err.value.response.headers["x-should-retry"] == "false"
    for _ in range(3):
        gamma.fine_tuning.jobs.create(model=MODEL, training_file=last.id)
    with pytest.raises(openai.RateLimitError) as err:
        gamma.fine_tuning.jobs.create(model=MODEL, training_file=last.id)
    assert err.value.body["param"] == "max_queued_jobs" and "max_queued_jobs" in err.value.body["message"]
    # Another tenant is not affected.
    delta = server.client("delta")
    f = delta.files.create(file=("d.jsonl", GOOD), purpose="fine-tune")
    assert delta.fine_tuning.jobs.create(model=MODEL, training_file=f.id).status == "queued"


def test_the_audit_log_names_tenant_and_object(server, caplog):
    caplog.set_level("INFO", logger="harli_sgl.audit")
    with httpx.Client(base_url=server.base, headers={"x-test-tenant": "epsilon"}) as http:
        f = http.post("/v1/files", files={"file": ("e.jsonl", GOOD)},
                      data={"purpose": "fine-tune"}).json()["id"]
        http.delete(f"/v1/files/{f}")
    lines = [r.getMessage() for r in caplog.records if r.name == "harli_sgl.audit"]
    assert f"audit action=file.create tenant=epsilon object={f} bytes={len(GOOD)} " \
           "purpose=fine-tune" in lines
    assert f"audit action=file.delete tenant=epsilon object={f}" in lines


def test_a_jobs_results_file_is_its_tenants_alone(server, alphas):
    from harli_sgl.worker.job_results import store_results_file

    server.store.add_event(alphas["job"], "info", "step 1", {"step": 1, "train_loss": 0.5},
                           type="metrics")
    results = store_results_file(server.store, alphas["job"], "alpha")  # as the worker does
    alpha, beta = server.client("alpha"), server.client("beta")
    assert alpha.files.retrieve(results).purpose == "fine-tune-results"
    assert alpha.files.content(results).read().decode().splitlines()[1] == "1,0.5,,,"
    assert results in {f.id for f in alpha.files.list(purpose="fine-tune-results")}
    not_found_body(lambda: beta.files.content(results))
    not_found_body(lambda: beta.files.retrieve(results))
    assert beta.files.list().data == []
