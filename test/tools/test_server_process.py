"""Stopping server processes: a SIGTERM to each group at once, then SIGKILL for what is left."""

from __future__ import annotations

import os
import textwrap
import time

from harli_sgl.tools.server_process import ServerProcess, stop_together

# A stand-in server: on SIGTERM it logs, takes a second to shut down (as a harli_sgl
# server draining does), logs again and exits; its child ignores SIGTERM altogether.
SLOW_TO_STOP = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    name, log = sys.argv[1], sys.argv[2]
    def note(what):
        with open(log, "a") as f:
            f.write(f"{name} {what}\\n")
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    with open(log + "." + name + ".child", "w") as f:
        f.write(str(child.pid))
    def on_term(*_):
        note("term")
        time.sleep(1.0)
        note("exit")
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    note("up")
    while True:
        time.sleep(0.1)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent (gone) could reap it.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_servers_stop_together_and_nothing_of_their_groups_survives(tmp_path):
    (tmp_path / "slow_to_stop.py").write_text(SLOW_TO_STOP)
    log = str(tmp_path / "log")
    servers = [ServerProcess([name, log], module="slow_to_stop", env={"PYTHONPATH": str(tmp_path)})
               for name in ("a", "b")]
    for s in servers:
        s.start()
    deadline = time.monotonic() + 60
    while not (os.path.exists(log) and open(log).read().count("up") == 2
               and all(os.path.exists(f"{log}.{n}.child") for n in "ab")):
        assert time.monotonic() < deadline, "the stand-in servers did not come up"
        time.sleep(0.05)
    children = [int(open(f"{log}.{n}.child").read()) for n in "ab"]
    assert all(alive(pid) for pid in children)

    stop_together([servers[0], None, servers[1]])

    lines = open(log).read().split("\n")
    # Both were told before either had finished shutting down: a sequential stop would
    # log "a exit" before "b term".
    assert lines.index("b term") < lines.index("a exit"), lines
    assert all(s.proc.returncode == 0 for s in servers)  # each had its orderly exit
    # The SIGTERM-deaf children were killed (a SIGKILL lands a moment after it is sent).
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, [open(f"/proc/{p}/stat").read() for p in children]
        time.sleep(0.05)
    stop_together(servers)  # stopping what has stopped is a no-op
