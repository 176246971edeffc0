"""Soak test: saturated serving, two jobs (one with a 50 MB upload), a worker kill -9.

    python benchmark/soak.py --out out/soak                    # the standing 10-minute soak
    python benchmark/soak.py --out /tmp/soak --duration-s 60 --big-upload-mb 5   # a quick look

One harli_sgl server (embedded default model, ``--harli-mode harli``) serves
``sglang.bench_serving`` at saturation (rate inf, 64 prompts of 256 in / 64 out
per round, rounds back to back) for ``--duration-s``, while two finetune jobs
train: a small chat dataset and a large upload (10 lines of ~5 MB each by
default, under the 64 MiB limit; tokenising it is the work that used to stall
the worker's loop). Halfway through, the finetune worker is killed with
SIGKILL, once, on purpose.

It reports, from the clients' and the server's own records:

* failed requests (bench_serving's per-request errors), over all rounds;
* jobs that failed (and their errors), and the jobs' final states;
* workers killed as hung (the supervisor's ``killing it as hung`` log lines),
  worker restarts (``/harli/status``), and SGLang retractions (``Retract
  requests`` log lines);
* memory growth per process (RSS at the end minus RSS once the jobs have
  started, by role: main, scheduler, detokenizer, finetune worker), split into
  private memory (``RssAnon``) and shared memory (``RssShmem``: pages mapped
  from another process, which cost the host nothing more; the worker maps the
  serving weights and the KV pages it is lent), plus a time series of the
  worker's memory every ``--sample-every-s``.

The target is 0 everywhere except the one deliberate kill (1 restart). Results go
to DIR/soak.json and DIR/server.log, and a summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time

import openai
import psutil
import requests

from colocation import training_rows  # benchmark/ is on sys.path when run as a script
from harli_sgl.tools import bench_model
from harli_sgl.tools.bench_client import BenchLoad, failed_requests, run_bench_serving
from harli_sgl.tools.server_process import ServerProcess

ROLES = (("harli::finetune", "worker"), ("sglang::scheduler", "scheduler"),
         ("sglang::detokenizer", "detokenizer"))


def small_rows(n: int = 64, seed: int = 0) -> list[dict]:
    return training_rows(n, seed)


def big_upload(total_mb: float, lines: int = 10) -> bytes:
    """``lines`` records of ~total/lines MB each; the long part is the completion, so every
    record keeps supervised tokens after truncation and the job really trains."""
    per_line = int(total_mb * 1024 * 1024 / lines)
    rng = random.Random(1)
    out = []
    for i in range(lines):
        words = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(per_line // 6))
        out.append(json.dumps({"prompt": f"Story {i}:", "completion": " " + words}))
    return ("\n".join(out) + "\n").encode()


def memory(pid: int) -> dict[str, int]:
    """RSS and its parts in bytes: private (RssAnon), shared memory mapped from another process
    (RssShmem: the serving weights and the KV pages the worker touches), and file pages."""
    fields = {"VmRSS": "rss", "RssAnon": "private", "RssShmem": "shared", "RssFile": "file"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                out[fields[key]] = int(line.split()[1]) * 1024
    return out


def mb(mem: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    return {role: {k: round(v / 2**20, 1) for k, v in m.items()} for role, m in sorted(mem.items())}


def growth(before: dict, after: dict, part: str) -> dict[str, float]:
    return {role: round((after.get(role, {}).get(part, 0) - before.get(role, {}).get(part, 0))
                        / 2**20, 1) for role in sorted(set(before) | set(after))}


def memory_by_role(server: ServerProcess) -> dict[str, dict[str, int]]:
    main = psutil.Process(server.proc.pid)
    out = {"main": memory(main.pid)}
    for child in main.children(recursive=True):
        try:
            title = " ".join(child.cmdline()) or child.name()
            for marker, role in ROLES:
                if marker in title or marker in child.name():
                    mine = memory(child.pid)
                    out[role] = {k: out.get(role, {}).get(k, 0) + v for k, v in mine.items()}
        except (psutil.Error, OSError):
            continue
    return out


class Soak:
    def __init__(self, args):
        self.args = args
        os.makedirs(args.out, exist_ok=True)
        self.model = bench_model.resolve(args.model)
        self.server = ServerProcess(
            ["--harli-mode", "harli", "--harli-workdir", os.path.join(args.out, "workdir"),
             "--harli-profile-dir", os.path.join(args.out, "profiles"), *self.model.server_flags()],
            log_path=os.path.join(args.out, "server.log"))
        self.url = self.server.base_url
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0)

    def status(self) -> dict:
        return requests.get(self.url + "/harli/status", timeout=60).json()

    def wait(self, what: str, ok, timeout_s: float = 900.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} after {timeout_s:.0f}s")
            time.sleep(1.0)

    def submit_jobs(self) -> list[str]:
        small = self.client.files.create(
            file=("small.jsonl", "".join(json.dumps(r) + "\n" for r in small_rows()).encode()),
            purpose="fine-tune")
        big = self.client.files.create(file=("big.jsonl", big_upload(self.args.big_upload_mb)),
                                       purpose="fine-tune")
        jobs = []
        for f, epochs, suffix in ((small, 50, "small"), (big, 50, "big")):
            job = self.client.fine_tuning.jobs.create(
                model=self.model.served_name, training_file=f.id, suffix=suffix, seed=0,
                hyperparameters={"n_epochs": epochs, "batch_size": 4})
            jobs.append(job.id)
        return jobs

    def run(self) -> dict:
        args = self.args
        self.server.start()
        try:
            self.server.wait_ready()
            self.wait("the worker did not start", lambda: self.status()["worker"]["alive"])
            self.wait("the start-up profile did not end",
                      lambda: not self.status()["profiling"] and self.status()["predictor"]["profiled"])
            jobs = self.submit_jobs()
            self.wait("the jobs did not start",
                      lambda: all(self.client.fine_tuning.jobs.retrieve(j).status != "queued"
                                  for j in jobs))
            mem0 = memory_by_role(self.server)
            restarts0 = self.status()["worker"]["restarts"]
            killed: list[int] = []
            series: list[dict] = []
            started = time.monotonic()
            sampling = threading.Event()

            def sample_worker() -> None:
                # Growth that levels off is a working set; growth that keeps climbing is a leak.
                while not sampling.wait(args.sample_every_s):
                    worker = memory_by_role(self.server).get("worker")
                    if worker:
                        series.append({"t_s": round(time.monotonic() - started),
                                       **{k: round(v / 2**20, 1) for k, v in worker.items()}})

            sampler = threading.Thread(target=sample_worker, daemon=True)
            sampler.start()

            def kill_worker() -> None:
                pid = self.status()["worker"]["pid"]
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

            timer = threading.Timer(args.duration_s / 2, kill_worker)
            timer.start()
            rounds, failed, completed = 0, 0, 0
            end = time.monotonic() + args.duration_s
            while time.monotonic() < end:
                load = BenchLoad(num_prompts=args.num_prompts, input_len=args.input_len,
                                 output_len=args.output_len, request_rate=float("inf"),
                                 seed=rounds)
                result = run_bench_serving(self.url, self.model.path, load)
                rounds += 1
                failed += failed_requests(result)
                completed += result.get("completed", 0)
            timer.cancel()
            sampling.set()
            status = self.status()
            mem1 = memory_by_role(self.server)
            states = {j: self.client.fine_tuning.jobs.retrieve(j) for j in jobs}
        finally:
            self.server.stop()
        with open(self.server.log_path, errors="replace") as f:
            log = f.read()
        report = {
            "model": args.model, "duration_s": args.duration_s, "bench_rounds": rounds,
            "requests_completed": completed, "requests_failed": failed,
            "jobs": {j: {"status": s.status, "error": s.error.model_dump() if s.error else None,
                         "trained_tokens": s.trained_tokens} for j, s in states.items()},
            "jobs_failed": sum(s.status == "failed" for s in states.values()),
            "deliberate_worker_kills": len(killed),
            "worker_restarts": status["worker"]["restarts"] - restarts0,
            "workers_killed_as_hung": log.count("killing it as hung"),
            "retractions": log.count("Retract requests"),
            "rss_growth_mb": growth(mem0, mem1, "rss"),
            "rss_end_mb": {role: round(m["rss"] / 2**20, 1) for role, m in sorted(mem1.items())},
            "private_growth_mb": growth(mem0, mem1, "private"),
            "shared_growth_mb": growth(mem0, mem1, "shared"),
            "memory_start_mb": mb(mem0),
            "memory_end_mb": mb(mem1),
            "worker_memory_series_mb": series,
        }
        with open(os.path.join(args.out, "soak.json"), "w") as f:
            json.dump(report, f, indent=2)
        return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/soak")
    p.add_argument("--model", choices=bench_model.CHOICES, default="smollm2",
                   help="the served and trained model (default: the embedded SmolLM2)")
    p.add_argument("--duration-s", type=float, default=600.0)
    p.add_argument("--big-upload-mb", type=float, default=50.0)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--sample-every-s", type=float, default=15.0,
                   help="how often the worker's memory is sampled for the time series")
    report = Soak(p.parse_args()).run()
    print(json.dumps(report, indent=2))
    targets_met = (report["requests_failed"] == 0 and report["jobs_failed"] == 0
                   and report["workers_killed_as_hung"] == 0 and report["retractions"] == 0
                   and report["worker_restarts"] == report["deliberate_worker_kills"])
    print("targets met" if targets_met else "TARGETS MISSED")


if __name__ == "__main__":
    main()
