"""How much CPU does an idle server burn? Stock SGLang against harli_sgl with no job.

    python benchmark/idle_cpu.py --out out/idle_cpu

An idle server that spins would slow whatever shares its cores (including the
other server in ``benchmark/overhead.py``'s alternating runs). Each server is
started alone, left idle past harli_sgl's start-up profile, and the CPU time of
every process in its tree is sampled over ``--window-s``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import psutil

from harli_sgl.model import byte_model
from harli_sgl.tools.server_process import ServerProcess, stock_sglang_argv


def cpu_share(server: ServerProcess, settle_s: float, window_s: float) -> dict[str, float]:
    server.start().wait_ready()
    try:
        time.sleep(settle_s)
        root = psutil.Process(server.proc.pid)
        procs = [root, *root.children(recursive=True)]
        before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        time.sleep(window_s)
        share: dict[str, float] = {}
        for p in procs:
            try:
                used = sum(p.cpu_times()[:2]) - before[p.pid]
            except psutil.NoSuchProcess:
                continue
            name = p.name()[:40]
            share[name] = share.get(name, 0.0) + 100 * used / window_s
        return share
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--window-s", type=float, default=20.0)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = byte_model.ensure()
    argv, env = stock_sglang_argv(["--model-path", model])
    result = {
        "stock": cpu_share(ServerProcess(argv, module="sglang.launch_server", env=env,
                                         log_path=os.path.join(args.out, "stock.log")),
                           15, args.window_s),
        # Past the start-up profile (at most 60 s) so only idle housekeeping remains.
        "harli": cpu_share(ServerProcess(["--model-path", model, "--harli-workdir",
                                          tempfile.mkdtemp(prefix="harli-idle-")],
                                         log_path=os.path.join(args.out, "harli.log")),
                           90, args.window_s),
    }
    for name, share in result.items():
        print(name, {k: round(v, 1) for k, v in share.items()},
              "total %.1f%% of one core" % sum(share.values()))
    with open(os.path.join(args.out, "idle_cpu.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
