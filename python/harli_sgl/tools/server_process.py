"""Start, await and stop a real server process (harli_sgl or stock SGLang).

Used by the end-to-end tests (one server per test session) and by the
benchmarks, which compare stock ``python -m sglang.launch_server`` with
``python -m harli_sgl.launch_server`` under the same flags and load. Stock
SGLang gets the same CPU recipe Harli applies to itself, so a comparison
differs only in what Harli adds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stock_sglang_argv(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Stock SGLang's argv and environment with the same CPU recipe Harli uses."""
    from harli_sgl.platform import cpu_recipe, cuda_stub

    env: dict[str, str] = {}
    if cuda_stub.has_nvidia_driver():
        return argv, env
    argv, _ = cpu_recipe.with_defaults(argv, cpu_recipe.CPU_FLAG_DEFAULTS)
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    stub = cuda_stub.ensure()
    if stub is not None:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (stub, os.environ.get("LD_LIBRARY_PATH")) if p)
    return argv, env


@dataclass
class ServerProcess:
    """A server subprocess in its own process group (so stop() reaches every child)."""

    argv: list[str]
    module: str = "harli_sgl.launch_server"
    port: int = field(default_factory=free_port)
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    inherit_output: bool = False  # share the caller's terminal instead of a log file
    # Cores the server and all its children may run on (inherited by every process it
    # forks); None: wherever the caller may run.
    cpus: tuple[int, ...] | None = None
    proc: subprocess.Popen | None = None
    # What answers 200 once the process serves (SGLang and harli_sgl; the router: /readiness).
    ready_path: str = "/get_model_info"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", self.module, *self.argv, "--port", str(self.port)]
        if "--host" not in self.argv:
            cmd += ["--host", "127.0.0.1"]
        if self.inherit_output:
            out, err = None, None
        else:
            out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            err = subprocess.STDOUT
        cpus = self.cpus
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **self.env},
                                     start_new_session=True,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        return self

    def wait_ready(self, timeout_s: float = 600.0) -> ServerProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                r = requests.get(self.base_url + self.ready_path, headers=self.headers, timeout=5)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"server not ready after {timeout_s}s; log: {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> None:
        stop_together([self], timeout_s)

    def __enter__(self) -> ServerProcess:
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_together(servers: list[ServerProcess | None], timeout_s: float = 30.0) -> None:
    """SIGTERM every server's process group at once, wait up to ``timeout_s`` for all of
    them, then SIGKILL what is left of each group.

    At once, because a harli_sgl server's orderly shutdown (drain, stop the scheduler,
    the worker and the detokenizer) takes seconds that are mostly waiting: a fleet's
    instances and router stopped one after another spent 33 s of a test run doing it.
    """
    groups = []
    for server in servers:
        if server is None or server.proc is None or server.proc.poll() is not None:
            continue
        pgid = os.getpgid(server.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        groups.append((server.proc, pgid))
    deadline = time.monotonic() + timeout_s
    for proc, _ in groups:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc, pgid in groups:
        # Children that outlive their parent (or ignore SIGTERM) go too.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
