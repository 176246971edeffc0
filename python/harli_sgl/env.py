"""The one typed registry of environment settings Harli reads (all ``HARLI_``-prefixed).

Flags belong in :mod:`harli_sgl.config`; the environment only carries what must
exist before flags are parsed (cache locations) or what tests and operators tune
without touching the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class EnvVar(Generic[T]):
    name: str
    default: T
    help: str

    def get(self) -> T:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        if isinstance(self.default, bool):
            return raw.lower() in ("1", "true", "yes", "on")  # type: ignore[return-value]
        return type(self.default)(raw)  # type: ignore[call-arg]

    def set(self, value: T) -> None:
        os.environ[self.name] = str(int(value) if isinstance(value, bool) else value)


CACHE_DIR = EnvVar(
    "HARLI_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "harli_sgl"),
    "Where the virtual environment, the CUDA driver stand-in and the default model are cached.",
)
FORCE_CPU = EnvVar(
    "HARLI_FORCE_CPU", False,
    "Apply the CPU recipe even if an NVIDIA driver is present (tests of the CPU path).",
)
TRACE_ITERATIONS = EnvVar(
    "HARLI_TRACE_ITERATIONS", "",
    "Append every measured iteration (features, slot work, interval, predictions, and the "
    "policy's decision for it with the target and prediction it weighed) and every co-run "
    "piece (start, end) to this JSONL file.",
)
BODY_TIMEOUT_S = EnvVar(
    "HARLI_BODY_TIMEOUT_S", 60.0,
    "How long a request body may take to arrive, plus one second per MiB it declares "
    "(harli_sgl.sglang.body_deadline); a slower body is answered 408 and its connection closed.",
)
SKIP_DRIVER_CHECK = EnvVar(
    "HARLI_SKIP_DRIVER_CHECK", False,
    "Start on a GPU host whose NVIDIA driver looks too old for the installed torch (e.g. a "
    "host with NVIDIA's forward-compatibility package, which the check cannot see).",
)
