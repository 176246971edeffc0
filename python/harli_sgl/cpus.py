"""Core sets of a CPU host: ``--harli-cpu-split`` parsed, and the default split.

Ground floor, beside ``config.py``: plain tuples of CPU ids, no process or
thread is touched here (that is :mod:`harli_sgl.core.cpu_affinity`).
"""

from __future__ import annotations

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
