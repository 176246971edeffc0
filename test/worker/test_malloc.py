"""The worker's malloc settings give freed activation memory back to the OS (soak 2026-11-30).

A child Python process plays a training step the way glibc sees it: one large
block freed first (which raises glibc's dynamic mmap threshold), then 240 MB of
6 MB activation-sized tensors, each followed by a small tensor that outlives it
(as parameters' grads, optimizer state and Python objects do), then the
activations are freed. With the worker's environment the private memory falls
back; without it glibc keeps the holes.
"""

from __future__ import annotations

import os
import subprocess
import sys

from harli_sgl.config import HarliConfig
from harli_sgl.worker import malloc
from harli_sgl.worker.supervisor import WORKER_ENV, _worker_environment

STEP = """
import torch

def private_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon")) / 1024

first = torch.ones(16 << 18)  # 16 MB, freed: glibc raises its threshold to 16 MB
del first
base = private_mb()
activations, kept = [], []
for _ in range(40):
    activations.append(torch.ones(6 << 18))  # 6 MB
    kept.append(torch.ones(1024))
del activations
print(private_mb() - base)
"""


def retained_mb(env: dict[str, str]) -> float:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run([sys.executable, "-c", STEP], env={**clean, **env}, check=True,
                         capture_output=True, text=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


def test_the_worker_environment_returns_freed_activations(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with _worker_environment(HarliConfig()):  # what a spawned worker inherits
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(4 << 20)
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    assert malloc.ENV.items() <= WORKER_ENV.items()
    assert retained_mb(WORKER_ENV) < 40
    assert retained_mb({}) > 150  # glibc's default keeps them: the soak's RSS growth


def test_trim_runs():
    malloc.trim()
