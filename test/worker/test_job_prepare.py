"""The job executor prepares and publishes jobs off its message loop (issue 12, item 2).

A real :class:`JobExecutor` over the tiny model's weights in shared memory and a
real JobStore, driven the way the worker loop drives it (``tick`` between
slots, ``run_slot`` for grants), in this process. The prepare thread is held
busy by an event the test controls, so "the loop keeps training another job
while this one is still being tokenised" is checked by order, not by timing.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from harli_sgl.config import HarliConfig
from harli_sgl.core.message.to_worker import SlotGrant
from harli_sgl.core.shared_weights import fuse
from harli_sgl.jobs.store import JobStore
from harli_sgl.model import byte_model
from harli_sgl.worker.executor import JobExecutor
from harli_sgl.worker.spec import WorkerSpec

ROWS = [{"prompt": f"{i} plus one is", "completion": f" {i + 1}"} for i in range(8)]


def make_executor(workdir: str, checkpoint_every_steps: int = 0,
                  server_url: str = "http://127.0.0.1:9") -> JobExecutor:
    model_dir = byte_model.ensure("tiny")
    cfg = HarliConfig(mode="idle", workdir=workdir,
                      checkpoint_every_steps=checkpoint_every_steps).resolved("cpu")
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    fused = fuse(hf.state_dict(), AutoConfig.from_pretrained(model_dir))
    # By default nothing listens at server_url, so publishing waits.
    spec = WorkerSpec(0, "", "", 0, cfg, model_path=model_dir, torch_threads=1,
                      server_url=server_url)
    return JobExecutor(spec, fused)


@pytest.fixture
def executor(tmp_path):
    ex = make_executor(str(tmp_path))
    yield ex
    ex.close()


@pytest.fixture
def hold(executor):
    """hold() occupies the prepare thread until the returned event is set (always, at the end)."""
    gates = []

    def held() -> threading.Event:
        gates.append(threading.Event())
        executor._prepare_pool.submit(gates[-1].wait)
        return gates[-1]

    yield held
    for gate in gates:
        gate.set()


def submit(store: JobStore, rows) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    f = store.create_file("train.jsonl", "fine-tune", data)
    job = store.create_job("tiny", f["id"], None, "t", 3,
                           {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0},
                           {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                            "dropout": 0.0}, None)
    store.set_status(job["id"], "queued")
    return job["id"]


def tick_until(ex: JobExecutor, until, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "timed out"
        ex.tick()
        time.sleep(0.02)


def events(store: JobStore, job_id: str) -> list[str]:
    return [e["message"] for e in store.list_events(job_id, limit=100)[0]]


def test_a_job_is_tokenised_off_the_loop_and_its_bad_input_fails_it_alone(executor, hold):
    ex, store = executor, executor.store
    good = submit(store, ROWS)
    tick_until(ex, lambda: good in ex.running and ex.running[good].trainer is not None)

    # Hold the prepare thread, then claim a job whose big input turns out unusable:
    # 3 MB prompts leave no supervised token within the 1024-token window.
    gate = hold()
    big = submit(store, [{"prompt": "x" * 3_000_000, "completion": " y"}] * 4)
    tick_until(ex, lambda: big in ex.running)
    assert ex.running[big].trainer is None and not ex.running[big].preparing.done()
    assert ex.has_work() and ex.state().job_id == good  # the preparing job offers no pieces

    # The loop trains the other job to its end while the big one still waits to be tokenised.
    slot = 0
    while ex.has_work():  # until the tick after its last step takes its adapter
        report = ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=60_000))
        assert report.job_id == good
        ex.tick()
        slot += 1
    tick_until(ex, lambda: ex.running[good].adapter_path is not None)  # written
    assert any("adapter saved" in m for m in events(store, good))
    assert not ex.running[big].preparing.done() and store.get_job(big)["status"] == "running"

    gate.set()
    tick_until(ex, lambda: store.get_job(big)["status"] == "failed")
    error = store.get_job(big)["error"]
    assert error["code"] == "invalid_training_file"
    assert error["message"].startswith("invalid training data: line 1: no supervised token")
    assert store.get_job(good)["status"] == "running"  # publishing; never failed by the other
    assert store.get_job(good)["error"] is None


def test_cancelling_a_job_while_it_is_prepared_drops_it(executor, hold):
    ex, store = executor, executor.store
    gate = hold()
    job = submit(store, ROWS)
    tick_until(ex, lambda: job in ex.running)
    store.request_cancel(job)
    tick_until(ex, lambda: job not in ex.running)
    gate.set()
    ex._prepare_pool.submit(lambda: None).result()  # the pool drained
    for _ in range(3):
        ex.tick()
    assert store.get_job(job)["status"] == "cancelled" and not ex.running


class SlowServer:
    """A real HTTP server that answers the publisher's calls only once ``release`` is set."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release = threading.Event()
        self.loaded: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # /v1/models
                outer.release.wait()
                self._json({"data": [{"id": n, "parent": "tiny"} for n in outer.loaded]})

            def do_POST(self) -> None:  # /load_lora_adapter
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.loaded.append(body["lora_name"])
                self._json({"success": True})

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()


def test_publishing_waits_for_the_server_off_the_loop(tmp_path):
    server = SlowServer()
    ex = make_executor(str(tmp_path), server_url=server.url)
    try:
        store = ex.store
        first = submit(store, ROWS)
        tick_until(ex, lambda: first in ex.running and ex.running[first].trainer is not None)
        slot = 0
        while ex.has_work():
            ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=60_000))
            ex.tick()
            slot += 1
        tick_until(ex, lambda: ex.running[first].publishing is not None)
        # The server holds the publish call; the loop does not wait for it.
        assert ex.running[first].publishing is not None
        assert not ex.running[first].publishing.done()
        second = submit(store, ROWS)
        tick_until(ex, lambda: second in ex.running and ex.running[second].trainer is not None)
        report = ex.run_slot(SlotGrant(slot, budget_units=1 << 40, budget_ms=60_000))
        assert report.job_id == second and report.units > 0
        assert store.get_job(first)["status"] == "running"

        server.release.set()
        tick_until(ex, lambda: store.get_job(first)["status"] == "succeeded")
        assert store.get_job(first)["fine_tuned_model"] == server.loaded[0]
    finally:
        ex.close()
        server.close()
