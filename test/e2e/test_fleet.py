"""A fleet on this machine: real PostgreSQL, two real harli_sgl instances, the real sglang-router.

One fleet serves the whole module (starting it takes minutes on two cores). The
tests talk to it with the official openai client and plain HTTP, through the
router for inference and to the instances directly for the fine-tuning API.
The kill test runs last and brings the killed instance back for any later test.
"""

from __future__ import annotations

import os
import re
import signal
import time

import openai
import psycopg
import pytest
import requests

from conftest import API_KEY
from e2e_util import BASE_MODEL, capital_rows, create_job, upload, wait_job
from harli_sgl.model import byte_model
from harli_sgl.tools.fleet import Fleet

LEASE_S = 6.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fleet"))
    f = Fleet(root, instances=2, api_key=API_KEY, durable_db=False,
              extra_flags=("--harli-lease-s", str(LEASE_S), "--harli-checkpoint-every-steps", "3",
                           "--harli-startup-profile-s", "20", *byte_model.server_flags()))
    try:
        f.start()
    except BaseException:
        f.stop()
        for name in sorted(os.listdir(root)):
            if name.endswith(".log"):
                print(f"--- {name}\n" + open(os.path.join(root, name), errors="replace").read()[-8000:])
        raise
    yield f
    f.stop()


def api(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)


def served_chats(server) -> int:
    """Chat completions this instance answered, from its own access log."""
    with open(server.log_path, errors="replace") as f:
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', f.read()))


def job_row(fleet, job_id) -> dict:
    with psycopg.connect(fleet.db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()


def started_by(fleet, job_id) -> list[str]:
    """The instance named by each 'running' status event of a job, in order."""
    with psycopg.connect(fleet.db_url) as conn:
        rows = conn.execute("SELECT data FROM events WHERE job_id = %s ORDER BY seq", (job_id,)).fetchall()
    import json

    out = []
    for (data,) in rows:
        d = json.loads(data) if isinstance(data, str) else (data or {})
        if d.get("status") == "running":
            out.append(d.get("lease_owner"))
    return out


def test_every_instance_answers_the_fine_tuning_api_the_same(fleet):
    a, b = fleet.servers
    f = upload(a, capital_rows(8))
    assert f.id in {x.id for x in api(b).files.list()}
    assert api(b).files.content(f.id).read() == api(a).files.content(f.id).read()
    # Bad input on one instance: a clear 4xx, and nothing stored is lost on any instance.
    r = requests.post(b.base_url + "/v1/files", headers=b.headers,
                      files={"file": ("x.jsonl", b"not json\n")}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = requests.post(a.base_url + "/v1/fine_tuning/jobs", headers=a.headers,
                      json={"model": BASE_MODEL, "training_file": "file-doesnotexist"})
    assert r.status_code in (400, 404) and r.json()["error"]["message"]
    assert f.id in {x.id for x in api(a).files.list()}
    assert f.id in {x.id for x in api(b).files.list()}


def test_jobs_run_once_each_and_their_adapters_answer_from_both_instances(fleet):
    a, b = fleet.servers
    f = upload(a, capital_rows(8))
    # Submitted at once, to both instances: both poll the same queue.
    jobs = [create_job(a if i % 2 else b, f.id, n_epochs=1, batch_size=4) for i in range(3)]
    done = [wait_job(a, j.id) for j in jobs]
    assert all(j.status == "succeeded" for j in done), [j.error for j in done]
    ids = {fleet.instance_id(0), fleet.instance_id(1)}
    for j in jobs:
        starts = started_by(fleet, j.id)
        assert len(starts) == 1 and starts[0] in ids, (j.id, starts)  # one instance, one start

    model = f"{BASE_MODEL}:{done[0].fine_tuned_model}"
    before = [served_chats(s) for s in fleet.servers]
    router = api(fleet.router)
    for _ in range(20):
        out = router.chat.completions.create(model=model, max_tokens=8, temperature=0,
                                             messages=[{"role": "user", "content": "Capital of Peru?"}])
        assert out.choices[0].message.content is not None
    served = [served_chats(s) - n for s, n in zip(fleet.servers, before)]
    assert sum(served) == 20 and min(served) > 0, served


def test_kill_9_of_the_training_instance_resumes_the_job_elsewhere(fleet):
    a, b = fleet.servers
    f = upload(b, capital_rows(8))
    job = create_job(b, f.id, n_epochs=8, batch_size=4)  # 16 steps, checkpoints every 3
    deadline = time.monotonic() + 900
    while not list(api(a).fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.5)
    owner = job_row(fleet, job.id)["lease_owner"]
    victim_index = [fleet.instance_id(i) for i in range(2)].index(owner)
    victim, survivor = fleet.servers[victim_index], fleet.servers[1 - victim_index]
    files_before = {x.id for x in api(survivor).files.list()}
    events_before = {e.id for e in api(survivor).fine_tuning.jobs.list_events(job.id, limit=100)}

    os.killpg(os.getpgid(victim.proc.pid), signal.SIGKILL)
    victim.proc.wait(30)
    try:
        resumed = wait_job(survivor, job.id)
        assert resumed.status == "succeeded", resumed.error
        assert started_by(fleet, job.id) == [owner, fleet.instance_id(1 - victim_index)]
        events_after = list(api(survivor).fine_tuning.jobs.list_events(job.id, limit=100))
        assert events_before <= {e.id for e in events_after}  # nothing lost
        assert any("resumed from the checkpoint" in e.message for e in events_after)
        assert any(owner in e.message and "lease" in e.message for e in events_after)
        assert files_before <= {x.id for x in api(survivor).files.list()}
        # The adapter answers through the router from the surviving instance.
        out = api(fleet.router).chat.completions.create(
            model=f"{BASE_MODEL}:{resumed.fine_tuned_model}", max_tokens=4,
            messages=[{"role": "user", "content": "Capital of Peru?"}])
        assert out.choices
    finally:
        fleet.servers[victim_index] = fleet.start_instance(victim_index, port=victim.port)
        fleet.servers[victim_index].wait_ready()
        fleet.wait_router_healthy()
    # The instance that comes back loads the fleet's latency profile from the shared
    # directory instead of profiling itself against live traffic.
    with open(victim.log_path, errors="replace") as f:
        assert "loaded the latency profile " + os.path.join(fleet.shared_dir, "predictor") in f.read()
