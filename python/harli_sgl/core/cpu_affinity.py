"""CPU affinity: which cores each thread of a process may run on, and SCHED_IDLE.

(Not to be confused with *job placement*, which instance of a fleet runs a
job: ``worker/fleet.py``. Core sets themselves are parsed in ``harli_sgl/cpus.py``.)

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

from harli_sgl.cpus import parse_cpus


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
