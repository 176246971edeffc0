"""Where the coordinator puts the worker's threads, and how it stops co-running (issue 18, item 6).

Real coordinator, policy and predictor; the worker is a real process with several
threads (its affinity and scheduling class are read back from /proc), reached through
a small in-process :class:`~harli_sgl.core.worker_link.WorkerLink` whose inbox answers a
``CoRunStop`` the way the worker does, at its next piece boundary a few ms later.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from harli_sgl.config import HarliConfig
from harli_sgl.core import cpu_affinity
from harli_sgl.core.coordinator import SlotCoordinator
from harli_sgl.core.coordinator.corun_control import STOP_WAIT_S
from harli_sgl.core.iteration import IterationFeatures
from harli_sgl.core.iteration import SlotWork
from harli_sgl.core.message.from_worker import CoRunStopped, SlotReport, WorkerState
from harli_sgl.core.message.to_worker import CoRunStart, CoRunStop, SlotGrant
from harli_sgl.core.policy.registry import make_policy
from harli_sgl.core.predictor.two_stage import TwoStagePredictor

PIECE_LEFT_S = 0.005  # the worker's piece in flight ends this long after a stop request


class Inbox:
    def __init__(self):
        self.due: list[tuple[float, object]] = []

    def recv(self, timeout_s: float):
        now = time.monotonic()
        if self.due and self.due[0][0] <= now + timeout_s:
            at, msg = self.due.pop(0)
            time.sleep(max(0.0, at - now))
            return msg
        time.sleep(timeout_s)
        return None


class Outbox:
    def __init__(self, inbox: Inbox):
        self.inbox, self.sent = inbox, []

    def send(self, msg) -> bool:
        self.sent.append(msg)
        if isinstance(msg, CoRunStop):  # stops at the next piece boundary
            at = time.monotonic() + PIECE_LEFT_S
            self.inbox.due.append((at, CoRunStopped(msg.seq, at)))
        if isinstance(msg, SlotGrant):  # the first one also builds the synthetic workload
            grants = sum(isinstance(m, SlotGrant) for m in self.sent)
            ms = (200.0 if grants == 1 else 0.0) + 2.0 + msg.budget_units / 2048.0
            self.inbox.due.append((time.monotonic() + ms / 1000.0, SlotReport(
                msg.slot_id, SlotWork(units_fwd=msg.budget_units, pieces=1), 0, ms)))
        return True


class Link:
    hello = None
    on_death = None
    ready = True

    def __init__(self, pid: int):
        self.inbox = Inbox()
        self.outbox = Outbox(self.inbox)
        self.pid = pid

    def check(self, now=None): ...
    def note_alive(self): ...
    def on_heartbeat(self, msg): ...
    def on_hello(self, msg): ...
    def kill_now(self): ...
    def shutdown(self, timeout_s=5.0): ...
    def status(self): return {}


@pytest.fixture
def worker_pid():
    code = ("import threading, time\n"
            "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while len(cpu_affinity.thread_ids(proc.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def rig(worker_pid):
    cfg = HarliConfig(mode="harli").resolved("cpu")
    # Every project host has 2 cores; on fewer there is no split to test, and that is a
    # failure to see, not a skip to overlook.
    assert cfg.worker_cpus, "this test needs a CPU split (2 cores or more)"
    predictor = TwoStagePredictor()
    link = Link(worker_pid)
    return SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, link), link, cfg


def placement(pid: int) -> set[tuple[tuple[int, ...], bool]]:
    """{(cores, SCHED_IDLE)} over the process's threads."""
    out = set()
    for tid, cpus in cpu_affinity.thread_affinity(pid).items():
        try:
            out.add((cpus, os.sched_getscheduler(tid) == os.SCHED_IDLE))
        except OSError:
            continue
    return out


def test_co_running_is_on_the_workers_cores_or_every_core_and_always_in_sched_idle(rig):
    coord, link, cfg = rig
    coord.corun_control.start(coord.corun_share)  # beside decode: its own cores
    assert placement(link.pid) == {(cfg.worker_cpus, True)}
    coord.corun_control.start(1.0)  # the idle server: every core, still yielding to serving
    assert placement(link.pid) == {(cfg.all_cpus, True)}
    assert [m.cpus for m in link.outbox.sent if isinstance(m, CoRunStart)] == \
        [cfg.worker_cpus, cfg.all_cpus]


def test_a_launch_moves_the_worker_off_decodes_cores_before_the_batch_runs(rig):
    coord, link, cfg = rig
    coord.corun_control.start(1.0)
    assert placement(link.pid) == {(cfg.all_cpus, True)}
    coord.on_launch(IterationFeatures(1, 100), time.monotonic())
    assert placement(link.pid) == {(cfg.worker_cpus, True)}
    assert not set(cfg.decode_cpus) & set(cfg.worker_cpus)
    assert coord.corun.active and coord.corun.cpus == cfg.worker_cpus


def test_a_stop_that_must_wait_waits_for_the_piece_boundary(rig):
    coord, link, cfg = rig
    coord.dispatch(WorkerState(has_work=True, min_piece_units=256,
                               next_pieces=tuple((0, 256) for _ in range(8))))
    f = IterationFeatures(1, 100)
    coord.corun_control.start(coord.corun_share)
    coord.on_launch(f, time.monotonic())
    # Stage 1 has not seen this batch size: the plan is to run it alone, stopping first.
    coord.after_iteration(f, running=1, waiting=0)
    assert coord.policy.last_decision == "unseen_batch_size"
    assert any(isinstance(m, CoRunStop) for m in link.outbox.sent)
    assert coord.corun.stopping is None  # CoRunStopped was awaited before the next launch
    (paused,) = coord.meter.paused_spans  # and that wait is not decode time
    assert PIECE_LEFT_S * 0.5 <= paused[1] - paused[0] <= STOP_WAIT_S + 0.5  # (a loaded host)
    # A stop that need not wait returns at once; its piece overlaps the next iteration.
    coord.corun_control.start(coord.corun_share)
    coord.corun_control.stop(wait=False)
    assert coord.corun.stopping is not None and len(coord.meter.paused_spans) == 1


def test_the_start_up_profile_does_not_learn_the_first_synthetic_slots_warm_up(rig):
    """The worker builds its synthetic workload inside the first synthetic slot (100-180 ms
    for 256 units on the worker test's model, a few ms after): stage 2 must not learn that
    a small slot costs that much."""
    coord, link, cfg = rig
    coord.set_profiling(True)
    f = IterationFeatures(2, 400)
    while coord.predictor.stage2.samples < 12:
        assert len(link.outbox.sent) < 500
        coord.on_launch(f, time.monotonic())
        time.sleep(0.002)
        coord.after_iteration(f, running=2, waiting=0)
    coord.set_profiling(False)
    assert [m.budget_units for m in link.outbox.sent if isinstance(m, SlotGrant)][:2] == [256, 512]
    # A 256-unit slot costs ~2 ms here (and a loaded host adds a few): not ~20 ms.
    assert coord.predictor.slot_cost(SlotWork(units_fwd=256, pieces=1)) < 10.0


def gpu_coordinator(means, share=0.5, sm_count=132):
    """A coordinator as a GPU host's scheduler builds it (the means read from the host)."""
    import dataclasses

    cfg = dataclasses.replace(HarliConfig(mode="harli", gpu_worker_share=share).resolved("cpu"),
                              device="cuda", decode_cpus=(), worker_cpus=())
    predictor = TwoStagePredictor()
    link = Link(os.getpid())
    coord = SlotCoordinator(cfg, make_policy(cfg, predictor), predictor, link,
                            means=means, sm_count=sm_count)
    return coord, link


def gpu_starts(link):
    return [(m.share, m.num_sms) for m in link.outbox.sent if isinstance(m, CoRunStart)]


def test_on_a_gpu_with_green_contexts_each_start_carries_its_purposes_share():
    from harli_sgl.core.gpu.corun_means import Means, MeansChoice, Why

    coord, link = gpu_coordinator(MeansChoice(Means.MPS_GREEN, Why.GREEN))
    assert coord.corun_share == 64 / 132  # the 0.5 step, rounded down to whole SM groups
    coord.corun_control.start(coord.corun_share)  # beside decode
    coord.corun_control.start(1.0)  # idle: the whole device
    assert gpu_starts(link) == [(64 / 132, 64), (1.0, 0)]
    # A batch launches while the worker has the whole device: back to its co-run share.
    coord.on_launch(IterationFeatures(1, 8), time.monotonic())
    assert gpu_starts(link)[-1] == (64 / 132, 64) or isinstance(link.outbox.sent[-1], CoRunStop)
    arrangement = coord.status()["arrangement"]
    assert arrangement["corun_means"] == "mps_green" and not arrangement["share_fixed"]


def test_on_a_gpu_without_mps_nothing_co_runs_and_the_status_says_why():
    from harli_sgl.core.gpu.corun_means import Means, MeansChoice, Why

    coord, link = gpu_coordinator(MeansChoice(Means.SERIAL, Why.NO_MPS))
    assert coord.corun_share == 0.0  # the policy plans serial slots only
    coord.corun_control.start(0.5)
    coord.corun_control.start(1.0)  # even idle: never time-sliced beside a request
    assert gpu_starts(link) == []
    arrangement = coord.status()["arrangement"]
    assert arrangement["corun_means"] == "serial"
    assert "time-slice" in arrangement["corun_unavailable_reason"]


def test_on_a_gpu_with_a_fixed_mps_share_everything_runs_at_it_and_says_so():
    from harli_sgl.core.gpu.corun_means import Means, MeansChoice, Why

    coord, link = gpu_coordinator(MeansChoice(Means.MPS_FIXED, Why.FIXED))
    coord.corun_control.start(1.0)
    assert gpu_starts(link) == [(0.5, 0)]
    assert coord.corun.share == 0.5  # an idle speed measured here is not labelled 1.0
    assert coord.status()["arrangement"]["share_fixed"]


def test_a_gpu_coordinator_without_host_facts_assumes_no_mps():
    coord, link = gpu_coordinator(None)
    assert coord.corun_share == 0.0
    assert coord.status()["arrangement"]["corun_means_reason"] == "no_mps"


def test_decode_keeps_every_core_unless_the_policy_trains_beside_it(rig):
    """A split exists for co-running; a job under a serial-only policy must not pay for it."""
    coord, _, cfg = rig
    assert coord.decode_on_every_cpu()  # no job: nothing to harvest
    coord.worker_state = WorkerState(has_work=True)
    expected = {"harli": False, "spatial": False, "greedy": False,
                "off": True, "idle": True, "static": True, "harli-serial": True}
    for mode, wide in expected.items():
        coord.set_policy(make_policy(dataclasses.replace(cfg, mode=mode), coord.predictor))
        assert coord.decode_on_every_cpu() is wide, mode
    coord.set_profiling(True)  # the start-up profile measures decode as it runs beside a job
    assert not coord.decode_on_every_cpu()


def test_an_iteration_the_policy_leaves_alone_runs_on_every_core_unless_it_measures_decode(rig):
    """Under ``harli`` a plan with nothing beside decode (co-running would break the SLO, or
    the slack is below a piece) gives decode every core; a calibration keeps it on its own."""
    from harli_sgl.core.policy.base import Arrangement, Plan
    from harli_sgl.core.policy.decision import Decision

    coord, link, _ = rig
    coord.worker_state = WorkerState(has_work=True)
    coord.corun_control.start(coord.corun_share)
    coord._apply(Plan(Arrangement.CONCURRENT, share=coord.corun_share, decision=Decision.CONCURRENT))
    assert not coord.decode_on_every_cpu()
    coord._apply(Plan(Arrangement.NONE, stop_wait=True, decision=Decision.NO_SLACK,
                      corun_interference=True))
    assert not coord.corun.active and coord.decode_on_every_cpu()
    coord._apply(Plan(Arrangement.NONE, stop_wait=True, decision=Decision.CALIBRATE))
    assert not coord.decode_on_every_cpu()
    coord._apply(Plan(Arrangement.NONE, decision=Decision.SLACK_BELOW_ONE_PIECE))
    assert coord.decode_on_every_cpu()
    # The next plan is made after that iteration; co-running again narrows decode.
    coord._apply(Plan(Arrangement.CONCURRENT, share=coord.corun_share, decision=Decision.CONCURRENT))
    assert not coord.decode_on_every_cpu()


def test_never_widening_keeps_decode_on_its_cores(rig):
    """Instances sharing a host's cores (crossed splits) must not widen onto each other's."""
    coord, _, cfg = rig
    coord.config = dataclasses.replace(cfg, widen_decode="never")
    assert not coord.decode_on_every_cpu()  # no job
    coord.worker_state = WorkerState(has_work=True)
    coord.set_policy(make_policy(dataclasses.replace(cfg, mode="off"), coord.predictor))
    assert not coord.decode_on_every_cpu()  # a serial-only policy


def test_a_prefill_runs_on_every_core_unless_the_policy_is_a_fixed_partition(rig):
    """``--harli-prefill-cpus all`` (the default) widens an extend batch beside a co-running
    job; ``spatial`` (a static split), ``decode`` and ``--harli-widen-decode never`` do not."""
    coord, _, cfg = rig
    assert cfg.prefill_cpus == "all"
    coord.worker_state = WorkerState(has_work=True)
    assert not coord.decode_on_every_cpu()  # harli with a job: decode on its own cores
    assert coord.launch_on_every_cpu(extend=True) and not coord.launch_on_every_cpu(extend=False)
    coord.set_policy(make_policy(dataclasses.replace(cfg, mode="spatial"), coord.predictor))
    assert not coord.launch_on_every_cpu(extend=True)
    coord.set_policy(make_policy(cfg, coord.predictor))
    coord.config = dataclasses.replace(cfg, prefill_cpus="decode")
    assert not coord.launch_on_every_cpu(extend=True)
    coord.config = dataclasses.replace(cfg, widen_decode="never")
    assert not coord.launch_on_every_cpu(extend=True)
    coord.config = cfg
    coord.set_profiling(True)  # the start-up profile measures the split as it is
    assert not coord.launch_on_every_cpu(extend=True)


def test_a_worker_that_could_not_make_green_contexts_turns_co_running_off_and_says_so():
    from harli_sgl.core.gpu.corun_means import Means, MeansChoice, Why
    from harli_sgl.core.message.from_worker import WorkerHello

    coord, link = gpu_coordinator(MeansChoice(Means.MPS_GREEN, Why.GREEN))
    coord._on_hello(WorkerHello(os.getpid(), 1, 8, 0, green_contexts_failed=True))
    assert coord.corun_share == 0.0  # the policy plans serial slots only
    coord.corun_control.start(0.5)
    assert gpu_starts(link) == []  # never an uncapped client beside decode
    arrangement = coord.status()["arrangement"]
    assert (arrangement["corun_means"], arrangement["corun_means_reason"]) == (
        "serial", "green_contexts_failed")
    # A restarted worker that made them co-runs again.
    coord._on_hello(WorkerHello(os.getpid(), 2, 8, 0))
    assert coord.corun_share == 64 / 132
    assert coord.status()["arrangement"]["corun_means"] == "mps_green"
