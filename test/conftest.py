"""Shared fixtures: one real harli_sgl server (real SGLang on CPU) per test session, and the job store's backends.

The server runs the random byte-level test model (``byte-llama-random``; fast,
and these tests' subject is not the model's knowledge), given explicitly since
the launcher's default is SmolLM2, with ``--api-key`` set, so every end-to-end
test also exercises SGLang's auth middleware on Harli's routes. Every server
``start_server`` starts serves it unless the test names another ``--model-path``
(the SmolLM2 tests do: ``smollm2_dir`` converts SmolLM2 once, or finds it in
the cache where set-up put it).
Its log is kept under the session's temp dir and printed when start-up fails.
A second session server, ``keyed_server``, adds ``--admin-api-key`` on an upgraded
workdir; the key/limit tests and the tenant tests share it.

Job-store tests take ``db_url`` and run once per backend: ``None`` (SQLite in
the workdir) and a fresh database on one throwaway PostgreSQL server per
session (:class:`~harli_sgl.tools.postgres.PostgresServer`, fsync off). A
missing PostgreSQL fails those tests, never skips them: the fleet depends on it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import pytest

from harli_sgl.model import byte_model
from harli_sgl.tools.postgres import PostgresNotFound, PostgresServer
from harli_sgl.tools.server_process import ServerProcess

API_KEY = "harli-test-key"
ADMIN_KEY = "harli-admin-key-tenants-91c3"
BODY_TIMEOUT_S = 3  # short, so the slow-body test waits seconds, not a minute
KEYED_MAX_FILE_BYTES = 100_000
# Frequent checkpoints so crash/restart tests see one early; a 1 MiB upload
# limit so the oversize test stays cheap.
SESSION_SERVER_FLAGS = ["--harli-mode", "harli", "--harli-checkpoint-every-steps", "5",
                        "--harli-max-file-bytes", str(2**20)]


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    # Under /tmp, not pytest's temporary root: under root the server runs as the postgres
    # user, which cannot enter root's private directories.
    try:
        server = PostgresServer(tempfile.mkdtemp(prefix="harli-pg-"), durable=False)
    except PostgresNotFound as e:
        pytest.fail(str(e), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database for this test (dropped afterwards, open connections and all)."""
    name = f"harli_test_{next(_database_numbers)}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str | None:
    """The job store's ``db_url`` for this run of the test: None (SQLite), then PostgreSQL."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def start_server(tmp_path_factory, name: str, extra: list[str],
                 workdir: str | None = None, env: dict[str, str] | None = None) -> ServerProcess:
    root = tmp_path_factory.mktemp(name)
    workdir = workdir or str(root / "workdir")
    # One latency-profile directory per test session (or per suite run: scripts/test.sh
    # names one for all its end-to-end processes): only the first server profiles.
    profiles = os.environ.get("HARLI_TEST_PROFILE_DIR") or \
        str(tmp_path_factory.getbasetemp() / "profiles")
    model = [] if "--model-path" in extra else byte_model.server_flags()
    server = ServerProcess(
        argv=["--harli-workdir", workdir, "--api-key", API_KEY, "--harli-profile-dir", profiles,
              *model, *extra],
        log_path=str(root / "server.log"), api_key=API_KEY,
        # Every iteration and co-run piece, with timestamps: what the co-run tests read.
        env={"HARLI_TRACE_ITERATIONS": str(root / "trace.jsonl"), **(env or {})},
    )
    server.workdir = workdir  # type: ignore[attr-defined]
    server.trace_path = str(root / "trace.jsonl")  # type: ignore[attr-defined]
    server.start()
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        with open(server.log_path, errors="replace") as f:
            print(f.read()[-20000:])
        raise
    return server


def wait_profiled(server, timeout_s: float = 300.0, headers: dict | None = None) -> None:
    """The start-up latency profile drives its own traffic; tests start after it.

    ``headers``: the operator's (the admin key, when the server has one: only the
    operator sees the detailed status).
    """
    import time

    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = requests.get(server.base_url + "/harli/status", headers=headers or server.headers,
                         timeout=30).json()
        if s["predictor"]["profiled"] and not s["profiling"]:
            return
        time.sleep(1)
    raise TimeoutError("the start-up latency profile did not finish")


@pytest.fixture(scope="session")
def harli_server(tmp_path_factory):
    server = start_server(tmp_path_factory, "harli", SESSION_SERVER_FLAGS)
    wait_profiled(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory):
    """One server with both ``--api-key`` and ``--admin-api-key``, shared by the key and limit
    tests and the tenant tests (one start instead of two).

    Its workdir is one today's release wrote (schema 2: a file and a succeeded job whose
    adapter, with random weights, is served under its old name), so the upgrade is tested
    on the same server as the tenants. Every step leaves a checkpoint (a model of its own).
    """
    from store_util import make_random_adapter, write_v2_store

    work = str(tmp_path_factory.mktemp("tenants-workdir") / "workdir")
    legacy = write_v2_store(work, statuses=("succeeded",))
    make_random_adapter(os.path.join(work, "adapters", legacy["adapter"]))
    s = start_server(tmp_path_factory, "keyed",
                     ["--admin-api-key", ADMIN_KEY, "--enable-response-store",
                      "--harli-checkpoint-every-steps", "1",
                      "--harli-max-file-bytes", str(KEYED_MAX_FILE_BYTES)], workdir=work,
                     env={"HARLI_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    s.legacy = legacy  # type: ignore[attr-defined]
    try:
        # The profiler needs the admin key for /harli/profile; only the operator sees details.
        wait_profiled(s, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """SmolLM2-135M-Instruct as an HF model directory (converted once into the cache)."""
    from harli_sgl.model import smollm2

    return smollm2.ensure()


@pytest.fixture(scope="session")
def model_path(harli_server) -> str:
    import requests

    info = requests.get(harli_server.base_url + "/get_model_info", headers=harli_server.headers).json()
    return info["model_path"]
