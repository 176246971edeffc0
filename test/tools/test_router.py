"""harli_sgl.tools.router: the real Rust sglang-router, started without importing SGLang."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

from harli_sgl.tools.server_process import free_port


def test_the_router_serves_without_ever_importing_sglang():
    port = free_port()
    # A worker URL where nothing listens: the router starts anyway and answers /liveness.
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "harli_sgl.tools.router",
         "--worker-urls", f"http://127.0.0.1:{free_port()}", "--host", "127.0.0.1",
         "--port", str(port), "--worker-startup-timeout-secs", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/liveness", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the router never answered /liveness"
            time.sleep(0.2)
    finally:
        proc.kill()
        imports = proc.communicate(timeout=30)[1]
    imported = {line.rsplit("|", 1)[-1].strip() for line in imports.splitlines()
                if line.startswith("import time:")}
    assert "sglang_router.router" in imported  # the Rust router's Python face
    assert "sglang" not in imported and "sglang_router.mini_lb" not in imported


def test_the_debugging_balancer_is_refused_with_a_reason():
    out = subprocess.run([sys.executable, "-m", "harli_sgl.tools.router", "--mini-lb",
                          "--worker-urls", "http://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--mini-lb needs SGLang" in out.stderr, out.stderr
