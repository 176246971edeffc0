"""The PostgreSQL tool from the shell, as scripts use it: daemon start, URL, logins, restart, stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import psycopg
import pytest

from harli_sgl.tools.postgres import PostgresServer, find_bindir

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "python")


def tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(PYTHON_DIR)}
    return subprocess.run([sys.executable, "-m", "harli_sgl.tools.postgres", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def cluster_dir():
    path = tempfile.mkdtemp(prefix="harli-pg-tool-")  # reachable by the postgres user (see conftest)
    yield path
    tool("--dir", path, "--stop")
    shutil.rmtree(path, ignore_errors=True)


def test_binaries_are_found():
    assert all(os.access(os.path.join(find_bindir(), b), os.X_OK) for b in ("initdb", "pg_ctl"))


def test_daemon_url_restart_and_stop(cluster_dir):
    started = tool("--dir", cluster_dir, "--daemon", "--no-fsync", "--create-database", "jobs")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("postgresql://harli:") and url.endswith("/jobs")
    assert tool("--dir", cluster_dir, "--url").stdout.strip() == url.rsplit("/", 1)[0] + "/postgres"
    assert oct(os.stat(os.path.join(cluster_dir, "url")).st_mode & 0o777) == "0o600"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE kept (x int)")
        db.execute("INSERT INTO kept VALUES (42)")
    # TCP logins need the password.
    without = url.replace(url.split("//")[1].split("@")[0], "harli")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without, connect_timeout=5).close()
    again = tool("--dir", cluster_dir, "--daemon")
    assert again.returncode == 1 and "already running" in again.stderr

    assert tool("--dir", cluster_dir, "--stop").returncode == 0
    assert not PostgresServer(cluster_dir).is_running()
    # A restart finds the cluster, its port and its data again.
    restarted = tool("--dir", cluster_dir, "--daemon", "--create-database", "jobs")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == url
    with psycopg.connect(url) as db:
        assert db.execute("SELECT x FROM kept").fetchone() == (42,)


def test_foreground_mode_stops_on_sigterm(cluster_dir):
    env = {**os.environ, "PYTHONPATH": os.path.abspath(PYTHON_DIR)}
    proc = subprocess.Popen([sys.executable, "-m", "harli_sgl.tools.postgres", "--dir", cluster_dir,
                             "--no-fsync"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        with psycopg.connect(url) as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        assert not PostgresServer(cluster_dir).is_running()
    finally:
        if proc.poll() is None:
            proc.kill()
