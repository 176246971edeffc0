"""Arrangement control: start and stop co-running, run serial slots, move the worker's threads.

Co-running is a state, not a per-iteration message: ``CoRunStart`` once, then
the worker trains piece after piece on its share while the scheduler keeps
decoding, until ``CoRunStop`` (waited for at the piece boundary only when a
plan says running beside the next iteration would break the SLO).

GPU share (UNTESTED on a GPU). The co-running means (``core/gpu/corun_means.py``)
decides whether the worker can co-run at all; each ``CoRunStart`` carries the
share its purpose gets (``core/gpu/share.py``): beside decode the largest green
context step within the policy's share, idle the whole device, and under a
fixed MPS share always that share. A batch launching while the worker runs on
the whole device moves it back to its co-run share (at its next piece boundary).

CPU affinity. The scheduler, not the worker, moves the worker's threads: onto
the worker's cores in SCHED_IDLE while co-running beside decode, onto every
core in the normal class for serial slots, and onto every core in SCHED_IDLE
while the server is idle. Doing it from here takes effect at once, even in the
middle of a piece, so a request arriving while the worker uses every core finds
decode's core free without waiting for a piece boundary.
"""

from __future__ import annotations

import logging
import time

from harli_sgl.config import HarliConfig
from harli_sgl.core import cpu_affinity
from harli_sgl.core.coordinator.channel import WorkerChannel
from harli_sgl.core.coordinator.measure import IterationMeter
from harli_sgl.core.coordinator.speeds import FinetuneSpeeds
from harli_sgl.core.corun import CoRunTracker
from harli_sgl.core.gpu import corun_means
from harli_sgl.core.gpu import share as gpu_share
from harli_sgl.core.gpu.host import HostFacts
from harli_sgl.core.message.to_worker import CoRunStart, CoRunStop
from harli_sgl.core.policy.base import Grant, SlotPolicy
from harli_sgl.core.worker_link import WorkerLink

logger = logging.getLogger(__name__)

# How long the scheduler waits for a co-run stop before the next iteration. A piece
# is ~10-30 ms on its own core, but the worker's SCHED_IDLE threads yield that core
# to SGLang's frontend, so a piece can stretch to hundreds of ms on a busy host:
# serving never waits longer than this, and what overlaps is measured as such.
STOP_WAIT_S = 0.02


def cpu_share(config: HarliConfig) -> float:
    return len(config.worker_cpus) / max(1, len(config.all_cpus)) if config.worker_cpus else 0.0


def default_means(config: HarliConfig) -> corun_means.MeansChoice:
    """The means when the host was not read: a CPU host's split; on a GPU, no MPS known."""
    gpu = config.device == "cuda"
    return corun_means.decide(HostFacts(gpu=gpu), config.gpu_worker_share if gpu
                              else cpu_share(config), may_start_mps=False)


class CoRunControl:
    """Args:
        config: read for the device and the CPU split only, which controls never change.
        means: how the worker co-runs (default: :func:`default_means`).
        sm_count: the GPU's SMs (green context steps are cut from them).
    """

    def __init__(self, config: HarliConfig, link: WorkerLink | None, channel: WorkerChannel,
                 meter: IterationMeter, corun: CoRunTracker, speeds: FinetuneSpeeds,
                 means: corun_means.MeansChoice | None = None, sm_count: int = 0):
        self.config = config
        self.means = means or default_means(config)
        self._chosen = self.means  # from the host, before any worker said what it could do
        self.sm_count = sm_count
        self.link = link
        self.channel = channel
        self.meter = meter
        self.corun = corun
        self.speeds = speeds
        self._affinity: tuple[tuple[int, ...], bool] | None = None

    @property
    def share(self) -> float:
        """The worker's share of the device for co-running beside decode (0: serial only)."""
        cfg = self.config
        if cfg.device == "cuda":
            return gpu_share.corun_share(self.means.means, cfg.gpu_worker_share, self.sm_count)
        return cpu_share(cfg) if cfg.device == "cpu" else 0.0

    def before_launch(self, policy: SlotPolicy) -> None:
        """A batch is about to launch while the worker may be using every core."""
        gpu = self.config.device == "cuda"
        if not (self.corun.active and self.corun.share >= 1.0 and (self.config.worker_cpus or gpu)):
            return
        # Move it off decode's cores before this batch runs: pinning from here takes
        # effect at once, mid-piece (measured: leaving a SCHED_IDLE trainer thread on
        # decode's core slowed the next iterations 2-5x). If the policy says co-running
        # on its share beside decode has just been measured far slower than modelled,
        # stop instead.
        if policy.corun_beside_launch(self.share):
            self.start(self.share)
        else:
            self.place(self.config.worker_cpus, idle_class=True)
            self.stop(wait=False)

    def start(self, share: float, synthetic: bool = False) -> None:
        if self.config.device == "cuda":
            self._start_gpu(share, synthetic)
            return
        cpus = self.config.all_cpus if share >= 1.0 else self.config.worker_cpus
        self.place(cpus, idle_class=True)
        if self.corun.active and self.corun.cpus == cpus and self.corun.synthetic == synthetic:
            return
        self.link.outbox.send(CoRunStart(cpus, synthetic, share))
        self.corun.started(share, cpus, time.monotonic(), synthetic)

    def _start_gpu(self, share: float, synthetic: bool) -> None:
        purpose = gpu_share.Purpose.IDLE if share >= 1.0 else gpu_share.Purpose.CORUN
        got = gpu_share.share_for(self.means.means, purpose, share,
                                  self.config.gpu_worker_share, self.sm_count)
        if got.share <= 0.0:  # no means to co-run: never time-slice beside decode
            if self.corun.active:
                self.stop(wait=False)
            return
        if self.corun.active and self.corun.share == got.share and self.corun.synthetic == synthetic:
            return
        self.link.outbox.send(CoRunStart((), synthetic, got.share, got.num_sms))
        self.corun.started(got.share, (), time.monotonic(), synthetic)

    def stop(self, wait: bool) -> None:
        seq = self.corun.stop_requested(time.monotonic())
        self.link.outbox.send(CoRunStop(seq))
        if wait:
            started = time.monotonic()
            self.channel.wait_for(lambda: self.corun.stopping is None, STOP_WAIT_S)
            # Not decode time: excluded from the iteration's decode like a serial slot.
            self.meter.paused_spans.append((started, time.monotonic()))

    def run_serial(self, grant: Grant, synthetic: bool = False) -> None:
        """A serial slot (or a hybrid top-up): on every core in the normal class, then back."""
        co_running = self.corun.active
        self.place_everywhere()
        run = self.channel.run_slot(grant, synthetic)
        if run.report is None:
            self.meter.overrun = True
        self.meter.serial_spans.append((run.started, run.ended))
        report = run.report
        if co_running and not synthetic and report is not None and report.units \
                and run.ended > run.started:
            self.speeds.topup_ran(report.units, (run.ended - run.started) * 1000.0, run.ended)
        if co_running and self.corun.active:  # hybrid: back to the worker's share
            self.place(self.corun.cpus, idle_class=True)

    def place(self, cpus: tuple[int, ...], idle_class: bool) -> None:
        """Move the worker's threads (CPU hosts with a split; a no-op elsewhere)."""
        link = self.link
        if not cpus or self.config.device != "cpu" or link is None or link.pid is None:
            return
        if self._affinity == (cpus, idle_class):
            return
        keep = (link.hello.liveness_tid,) if link.hello is not None and link.hello.liveness_tid else ()
        cpu_affinity.pin_threads(cpus, link.pid)
        cpu_affinity.set_idle_class(idle_class, link.pid, skip=keep)
        self._affinity = (cpus, idle_class)

    def place_everywhere(self) -> None:
        """Every core in the normal class: serial slots, and a worker just spawned."""
        self.place(self.config.all_cpus, idle_class=False)

    def worker_gone(self) -> None:
        self.corun.worker_gone()
        self._affinity = None

    def worker_started(self, green_contexts_failed: bool) -> None:
        """A worker said hello. Under ``mps_green`` one that could not make its green
        contexts turns co-running off (``corun_means.after_worker_start``), logged once and
        shown in ``/harli/status``; a later worker that made them turns it back on."""
        means = corun_means.after_worker_start(self._chosen, green_contexts_failed)
        if means != self.means:
            logger.warning("harli: co-running means now %s: %s", means.means.value, means.why.text)
        self.means = means
