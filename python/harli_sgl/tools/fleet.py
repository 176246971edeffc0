"""Start a whole fleet on one machine: PostgreSQL, N harli_sgl instances, sglang-router.

Used by ``scripts/fleet.sh`` (the demo), the end-to-end fleet tests and
``benchmark/fleet.py``, so all three run the same parts the same way:

* one PostgreSQL server (the Debian package's binaries, a data directory of its
  own, see :mod:`harli_sgl.tools.postgres`) holding the fleet's job store;
* one shared directory for files, checkpoints, adapters and latency profiles;
* N instances, each ``python -m harli_sgl.launch_server`` with ``--harli-db``,
  ``--harli-shared-dir`` and a workdir and instance id of its own. On a CPU host
  each instance gets its own cores: instance *i* decodes on core ``i mod n`` and
  co-runs its worker on the next one, so two instances on two cores do not both
  pin decode to core 0;
* SGLang's own router in front of them, started by ``harli_sgl.tools.router``
  (the same Rust router as ``python -m sglang_router.launch_router``, without the
  stock launcher's import of SGLang, which held up the fleet's start). It forwards inference routes; the fine-tuning API is answered by any
  instance directly, identically, because they share the store and the files.

Sizing: this machine has 2 cores and 24 GB, so the default instance flags
(``INSTANCE_FLAGS``) keep each KV cache small (``--max-total-tokens 4096``); the
design does not depend on it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import requests

from harli_sgl.tools.postgres import PostgresServer
from harli_sgl.tools.server_process import ServerProcess, stop_together

INSTANCE_FLAGS = ("--max-total-tokens", "4096")


def crossed_cpu_split(i: int) -> list[str]:
    """Flags for the ``i``-th of several instances sharing this host's cores: decode on one
    core, the worker's share on the next (the next instance's decode core), so decode must
    never widen onto it ("every core" is both instances' cores). [] on a single core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    decode, worker = cpus[i % len(cpus)], cpus[(i + 1) % len(cpus)]
    return ["--harli-cpu-split", f"{decode}/{worker}", "--harli-widen-decode", "never"]


@dataclass
class Fleet:
    root: str
    instances: int = 2
    api_key: str | None = None
    extra_flags: tuple[str, ...] = ()
    router_policy: str = "round_robin"
    durable_db: bool = True  # tests turn fsync off
    env: dict[str, str] = field(default_factory=dict)
    postgres: PostgresServer | None = None
    servers: list[ServerProcess] = field(default_factory=list)
    router: ServerProcess | None = None

    @property
    def shared_dir(self) -> str:
        return os.path.join(self.root, "shared")

    @property
    def db_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.url

    def start(self, timeout_s: float = 900.0) -> Fleet:
        os.makedirs(self.shared_dir, exist_ok=True)
        # Under /tmp: run as root, the server runs as the postgres user, which cannot enter
        # root's private directories (pytest's temporary root is one).
        self.postgres = PostgresServer(tempfile.mkdtemp(prefix="harli-fleet-pg-"),
                                       durable=self.durable_db).start()
        for i in range(self.instances):
            self.servers.append(self.start_instance(i))
        for server in self.servers:
            server.wait_ready(timeout_s)
        self.router = self._router().start().wait_ready(timeout_s)
        self.wait_router_healthy(timeout_s)
        return self

    def router_healthy_workers(self) -> int:
        """How many instances the router marks healthy (``GET /workers``)."""
        r = requests.get(self.router.base_url + "/workers", headers=self.router.headers, timeout=10)
        r.raise_for_status()
        data = r.json()
        workers = data.get("workers", []) if isinstance(data, dict) else data
        return sum(1 for w in workers if isinstance(w, dict) and w.get("is_healthy"))

    def wait_router_healthy(self, timeout_s: float = 900.0) -> None:
        """Until the router sends traffic to every instance (its readiness needs only one)."""
        deadline = time.monotonic() + timeout_s
        while self.router_healthy_workers() < len(self.servers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the router marks {self.router_healthy_workers()} of "
                                   f"{len(self.servers)} instances healthy after {timeout_s}s")
            time.sleep(1.0)

    def instance_id(self, i: int) -> str:
        return f"instance-{chr(ord('a') + i)}"

    def start_instance(self, i: int, port: int | None = None) -> ServerProcess:
        """Start instance ``i`` (again, after a kill: same workdir, id and port)."""
        workdir = os.path.join(self.root, self.instance_id(i))
        argv = [*INSTANCE_FLAGS, "--harli-db", self.db_url, "--harli-shared-dir", self.shared_dir,
                "--harli-workdir", workdir, "--harli-instance-id", self.instance_id(i),
                *self._cpu_split(i), *self.extra_flags]
        if self.api_key:
            argv += ["--api-key", self.api_key]
        kwargs = {"port": port} if port else {}
        return ServerProcess(argv, log_path=os.path.join(self.root, f"{self.instance_id(i)}.log"),
                             api_key=self.api_key, env=dict(self.env), **kwargs).start()

    def _cpu_split(self, i: int) -> list[str]:
        if "--harli-cpu-split" in self.extra_flags:
            return []
        return crossed_cpu_split(i)

    def _router(self) -> ServerProcess:
        argv = ["--worker-urls", *[s.base_url for s in self.servers], "--policy", self.router_policy,
                # Instances answer /health only once the fleet's adapters are loaded.
                "--health-check-endpoint", "/health", "--worker-startup-timeout-secs", "900"]
        if self.api_key:
            argv += ["--api-key", self.api_key]
        return ServerProcess(argv, module="harli_sgl.tools.router",
                             log_path=os.path.join(self.root, "router.log"), api_key=self.api_key,
                             ready_path="/readiness")

    def wait_instance_ready(self, server: ServerProcess, timeout_s: float = 900.0) -> None:
        """Until ``/health`` answers 200: the router's own test for sending traffic."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(server.base_url + "/health", headers=server.headers,
                                timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"{server.base_url} not healthy after {timeout_s}s")

    def stop(self) -> None:
        stop_together([self.router, *self.servers])
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> Fleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
