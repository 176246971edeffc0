"""How the worker gets a share of the GPU's SMs, or why it gets none and slots stay serial.

Two processes on one GPU run kernels at the same time only as clients of one
CUDA MPS control daemon; without it they time-slice, whatever
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` says. So MPS is the precondition of every
co-running means, and the choice is:

* ``mps_green``: MPS runs and the installed torch can make green contexts
  (``torch.cuda.GreenContext``: SM partitions as streams). The worker is an
  MPS client without a thread cap and holds one green context per share step
  (:mod:`harli_sgl.core.gpu.share`); a share changes at a piece boundary by
  launching the next piece on another step's stream. No new process, no new
  CUDA context per change.
* ``mps_fixed``: MPS runs, green contexts are not available. The worker's
  context is capped once, at start, by ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``;
  co-runs, top-ups and idle pieces all run at that one share, and the status
  says so (``share_fixed``).
* ``serial``: no share was asked for, or no MPS daemon runs and harli may not
  (or could not) start one. Co-running is off: the policy gets share 0 and
  trains in serial slots. Never silent time-slicing.

:func:`decide` is pure; the caller (``sglang/worker_start.py``) reads the host,
starts the daemon when the choice says so and the operator allowed it
(``--harli-gpu-start-mps``), decides again, logs the reason once and reports
it in ``/harli/status``. UNTESTED on a GPU: only the decision has run.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from harli_sgl.core.gpu.host import HostFacts


class Means(Enum):
    SERIAL = "serial"
    CPU_SPLIT = "cpu_split"  # a CPU host: the worker co-runs on its own cores
    MPS_FIXED = "mps_fixed"
    MPS_GREEN = "mps_green"


class Why(Enum):
    """Why the means was chosen; ``value`` is its status name, ``text`` the logged sentence."""

    def __new__(cls, value: str, text: str):
        member = object.__new__(cls)
        member._value_ = value
        member.text = text
        return member

    CPU_SPLIT = ("cpu_split", "a CPU host with a split: the worker co-runs on its own cores")
    NO_SPLIT = ("no_split", "a CPU host without a split (--harli-cpu-split none, or one core): "
                "serial slots only")
    NO_SHARE = ("no_share", "--harli-gpu-worker-share is 0: serial slots only")
    NO_MPS = ("no_mps", "no CUDA MPS control daemon runs, and --harli-gpu-start-mps is not set: "
              "without MPS the worker would time-slice with decode, so slots are serial")
    NO_MPS_CONTROL = ("no_mps_control", "no CUDA MPS control daemon runs and "
                      "nvidia-cuda-mps-control is not on PATH: slots are serial")
    MPS_START_FAILED = ("mps_start_failed", "starting the CUDA MPS control daemon failed: "
                        "slots are serial")
    START_MPS = ("start_mps", "no CUDA MPS control daemon runs: harli starts one")
    GREEN = ("green_contexts", "CUDA MPS runs and torch makes green contexts: the worker's "
             "share changes at piece boundaries")
    FIXED = ("mps_fixed_share", "CUDA MPS runs but torch cannot make green contexts here: the "
             "worker's share is fixed at start (top-ups and idle pieces run at it too)")
    GREEN_FAILED = ("green_contexts_failed", "the worker could not make its green contexts: an "
                    "uncapped MPS client without them would run beside decode on the whole "
                    "device, so slots are serial")


class MeansChoice(NamedTuple):
    means: Means
    why: Why
    start_mps: bool = False  # the caller should start the daemon and decide again

    @property
    def corun(self) -> bool:
        return self.means is not Means.SERIAL

    def status(self) -> dict:
        return {"corun_means": self.means.value,
                "corun_means_reason": self.why.value, "corun_means_text": self.why.text,
                "corun_unavailable_reason": None if self.corun else self.why.text}


def decide(facts: HostFacts, share: float, may_start_mps: bool,
           start_failed: bool = False) -> MeansChoice:
    """The co-running means for a worker share of ``share`` (0: none asked for).

    On a CPU host ``share`` is the split's (0: no split)."""
    if not facts.gpu:
        return MeansChoice(Means.CPU_SPLIT, Why.CPU_SPLIT) if share > 0 else \
            MeansChoice(Means.SERIAL, Why.NO_SPLIT)
    if share <= 0:
        return MeansChoice(Means.SERIAL, Why.NO_SHARE)
    if not facts.mps_running:
        if start_failed:
            return MeansChoice(Means.SERIAL, Why.MPS_START_FAILED)
        if not may_start_mps:
            return MeansChoice(Means.SERIAL, Why.NO_MPS)
        if not facts.mps_control:
            return MeansChoice(Means.SERIAL, Why.NO_MPS_CONTROL)
        return MeansChoice(Means.SERIAL, Why.START_MPS, start_mps=True)
    if facts.green_contexts and facts.sm_count > 0:
        return MeansChoice(Means.MPS_GREEN, Why.GREEN)
    return MeansChoice(Means.MPS_FIXED, Why.FIXED)


def after_worker_start(choice: MeansChoice, green_contexts_failed: bool) -> MeansChoice:
    """The means once a worker has started: under ``mps_green`` a worker that could not make
    its green contexts has no partition to co-run in (it is an MPS client without a thread
    cap), so co-running is off until a worker that made them says hello."""
    if choice.means is Means.MPS_GREEN and green_contexts_failed:
        return MeansChoice(Means.SERIAL, Why.GREEN_FAILED)
    return choice
