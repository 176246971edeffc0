"""``--harli-mode off`` (stock behaviour) and ``harli`` serve identical greedy tokens."""

from __future__ import annotations

import pytest

from conftest import start_server
from e2e_util import generate

PROMPTS = ["Once upon a time", "def fibonacci(n):", "The capital of France is", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def off_server(tmp_path_factory):
    server = start_server(tmp_path_factory, "off", ["--harli-mode", "off"])
    yield server
    server.stop()


def test_off_mode_status(off_server):
    import requests

    s = requests.get(off_server.base_url + "/harli/status", headers=off_server.headers).json()
    assert s["mode"] == "off"
    assert s["worker"]["alive"] is False and s["worker"]["pid"] is None


def test_greedy_tokens_identical_off_vs_harli(off_server, harli_server):
    for prompt in PROMPTS:
        a = generate(off_server, prompt, max_new_tokens=24)["output_ids"]
        b = generate(harli_server, prompt, max_new_tokens=24)["output_ids"]
        assert a == b, prompt


def test_a_sigterm_to_the_process_group_is_an_orderly_shutdown(off_server):
    # Last in this module: it stops the module's server. systemd and this harness signal
    # the whole group, scheduler included; the scheduler used to die of it at once and
    # SGLang's watchdog logged "scheduler_0 crashed with exit code -15".
    off_server.stop()
    with open(off_server.log_path, errors="replace") as f:
        log = f.read()
    assert "crashed with exit code" not in log
    assert "Gracefully exiting" in log  # SGLang's drain, then ShutdownReq to the scheduler
