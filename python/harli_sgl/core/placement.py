"""Where threads run on a CPU host: core sets, affinity of every thread, and SCHED_IDLE.

The concurrent arrangement on CPU gives decode and the finetune worker their own
cores. Linux applies affinity and scheduling class *per thread* (a tid), and a
process's OpenMP pool was created long before the arrangement changes, so each
call here walks ``/proc/<pid>/task`` and sets every thread. New threads inherit
the setting of the thread that creates them.

``SCHED_IDLE`` is the scheduling class that lets serving preempt the worker at
once: a runnable normal-class thread on the same core always wins, so
SGLang's HTTP, tokenizer and detokenizer threads that land on the worker's
core are never delayed by training. A SCHED_IDLE thread still gets a sliver of
CPU on a saturated host, which is why liveness (heartbeats) runs on a thread
that stays in the normal class.

Only ``os`` is used: this module is part of the engine-agnostic core.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class CoreSplit(NamedTuple):
    """Decode's cores and the worker's share of a CPU host."""

    decode: tuple[int, ...]
    worker: tuple[int, ...]

    @property
    def worker_share(self) -> float:
        return len(self.worker) / max(1, len(self.decode) + len(self.worker))


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"0,2-3"`` -> (0, 2, 3)."""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return tuple(sorted(set(cpus)))


def format_cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def default_split(available: tuple[int, ...]) -> CoreSplit | None:
    """Decode keeps the first half of the cores (rounded up), the worker the rest.

    Measured on the 2-core development host: a decode iteration of the default
    model is as fast on one core as on two (docs/benchmarks.md), so the second
    core is free compute. None when the host has a single core (no split).
    """
    if len(available) < 2:
        return None
    n_decode = (len(available) + 1) // 2
    return CoreSplit(available[:n_decode], available[n_decode:])


def thread_ids(pid: int | None = None) -> list[int]:
    pid = os.getpid() if pid is None else pid
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def pin_threads(cpus: tuple[int, ...], pid: int | None = None, skip: tuple[int, ...] = ()) -> int:
    """Set the affinity of every thread of ``pid`` (default: this process); returns how many."""
    n = 0
    for tid in thread_ids(pid):
        if tid in skip:
            continue
        try:
            os.sched_setaffinity(tid, cpus)
            n += 1
        except (ProcessLookupError, PermissionError, OSError):
            pass  # a thread that exited between the listing and the call
    return n


def set_idle_class(idle: bool, pid: int | None = None, skip: tuple[int, ...] = ()) -> int:
    """Put every thread of ``pid`` in SCHED_IDLE (or back in SCHED_OTHER); returns how many."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    n = 0
    for tid in thread_ids(pid):
        if tid in skip:
            continue
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
            n += 1
        except (ProcessLookupError, PermissionError, OSError):
            pass
    return n


def thread_affinity(pid: int) -> dict[int, tuple[int, ...]]:
    """{tid: allowed CPUs} read from ``/proc/<pid>/task/*/status`` (what tests and operators see)."""
    out: dict[int, tuple[int, ...]] = {}
    for tid in thread_ids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[tid] = parse_cpus(line.split(":", 1)[1])
                        break
        except OSError:
            continue
    return out
