"""``python -m harli_sgl.tools.tenants`` on the store a server uses, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harli_sgl.jobs.store import JobStore

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "python")


def cli(store_flags: list[str], *args: str) -> dict | list:
    out = subprocess.run([sys.executable, "-m", "harli_sgl.tools.tenants", *store_flags, *args],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": PYTHON_DIR})
    assert out.returncode == 0, out.stderr
    assert "audit action=" in out.stderr or args[1] == "list"
    return json.loads(out.stdout)


def test_keys_limits_and_shares_from_the_command_line(tmp_path, db_url):
    work = str(tmp_path / "work")
    flags = ["--harli-workdir", work] + (["--harli-db", db_url] if db_url else [])
    made = cli(flags, "keys", "create", "acme", "--name", "ci")
    assert made["tenant"] == "acme" and made["key"].startswith("hk-")
    store = JobStore(work, db_url=db_url)
    try:
        assert store.tenant_of_key(made["key"]) == "acme"
        listed = cli(flags, "keys", "list", "--tenant", "acme")
        assert [k["id"] for k in listed] == [made["id"]] and made["key"] not in json.dumps(listed)
        limits = cli(flags, "tenants", "limits", "acme", "--max-queued-jobs", "3",
                     "--max-stored-bytes", "1000")
        assert limits["limits"] == {"max_running_jobs": None, "max_queued_jobs": 3,
                                    "max_stored_bytes": 1000}
        # A limit not given keeps its value; 'none' returns it to the server's default.
        limits = cli(flags, "tenants", "limits", "acme", "--max-stored-bytes", "none")
        assert limits["limits"]["max_queued_jobs"] == 3 and limits["limits"]["max_stored_bytes"] is None
        cli(flags, "shares", "add", "ft:base:acme::0123456789ab", "*")
        assert store.adapter_access("zeta", "ft:base:acme::0123456789ab").shared
        cli(flags, "shares", "remove", "ft:base:acme::0123456789ab", "*")
        assert cli(flags, "shares", "list") == []
        assert cli(flags, "keys", "revoke", made["id"])["revoked_at"] is not None
        assert store.tenant_of_key(made["key"]) is None
    finally:
        store.close()
