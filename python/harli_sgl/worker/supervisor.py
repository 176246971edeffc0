"""Spawns the finetune worker, watches it, and restarts it with backoff.

Runs inside the scheduler process, so its rule is: never block serving. It owns
the scheduler's ends of the two ZMQ queues (bound once, outliving every worker
incarnation) and one ``multiprocessing`` spawn child at a time. ``check()`` is
called from the scheduler loop; it is a few syscalls when nothing happens.

Failure handling:

* death (any exit, ``kill -9`` included) is seen through the process handle,
  logged with its exit code, counted in ``restarts``, and followed by a respawn
  after a backoff that doubles per crash (reset once a worker stays up a minute);
* a worker is hung only when it is truly stuck, and is then killed and handled
  as a death. Heartbeats come from a thread of the worker's own and carry the
  age of its message loop's last turn, and the scheduler drains them before it
  judges silence, so neither a long scheduler iteration nor long but legitimate
  work in the worker counts. Silence past ``worker_heartbeat_timeout_s`` kills
  only a worker that also used no CPU meanwhile (a starved worker on a busy
  host, or one whose compute threads sit in SCHED_IDLE, keeps running); a
  message loop that has not turned for ``LOOP_STALL_LIMIT_S`` is stuck whatever
  its heartbeat thread says;
* a worker that does not say hello within the start-up timeout is killed too.

Each incarnation gets a new generation number; the queues drop traffic of
other generations, so a restarted worker never sees grants meant for its
predecessor.

It stays whole above 300 lines: spawning, liveness, death and restart share one
process handle and its clocks, and the rules above are easiest to check together.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import time
from dataclasses import replace
from typing import Callable

import zmq

from harli_sgl.config import HarliConfig
from harli_sgl.core.message.from_worker import FromWorker, Heartbeat, WorkerHello
from harli_sgl.core.message.to_worker import Shutdown, ToWorker
from harli_sgl.core.transport import PullQueue, PushQueue, new_ipc_path
from harli_sgl.worker import malloc
from harli_sgl.worker.spec import SharedTensors, WorkerSpec

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 180.0
STABLE_AFTER_S = 60.0
# No piece, checkpoint or store write takes minutes; a loop this old is stuck.
LOOP_STALL_LIMIT_S = 300.0
# OpenMP threads spin-wait after a parallel region. The worker's slots end right
# before a decode iteration starts, so its threads must not spin through that
# decode (measured: the iteration after a slot was 15-25 ms slower with libgomp's
# default spinning). Fully passive waiting fixes that but costs every piece a
# futex wake-up per op (pieces 45% slower); a short spin keeps pieces at full
# speed and stops within microseconds of the slot's end.
# The malloc settings keep freed activation memory from staying in the worker's RSS.
WORKER_ENV = {"GOMP_SPINCOUNT": "10000", **malloc.ENV}


def worker_env(config: HarliConfig, corun_means: str = "serial") -> dict[str, str]:
    """The spawned worker's environment additions.

    Only under the ``mps_fixed`` means (``core/gpu/corun_means.py``) is the worker's
    CUDA context capped to its share of the SMs (read once, at context creation). Under
    ``mps_green`` it stays uncapped and shares come from its green contexts; without MPS
    the variable would do nothing, so it is not set. UNTESTED on a GPU.
    """
    wanted = dict(WORKER_ENV)
    if config.device == "cuda" and corun_means == "mps_fixed" and config.gpu_worker_share > 0:
        wanted["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, int(config.gpu_worker_share * 100)))
    return wanted


@contextlib.contextmanager
def _worker_environment(config: HarliConfig, corun_means: str = "serial"):
    """Environment for the spawned worker only (:func:`worker_env`); spawn copies
    os.environ at exec."""
    wanted = worker_env(config, corun_means)
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update({k: v for k, v in wanted.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


class WorkerSupervisor:
    """Args:
        config: Harli's flags (liveness timeouts, restart backoff, the GPU share).
        spec: what every incarnation is started with (addresses and generation are filled in).
        target: the worker's entry function (tests pass stand-ins); ``run_worker`` by default.
        shared: the tensors every incarnation maps zero-copy (None: a worker without a model).
        serving_weight_segments / kv_pool_segments: ``{"dev:inode": bytes}`` of the serving
            weights and the KV pool as the scheduler maps them, reported beside the worker's
            own so that equal keys show the same memory (see /harli/status).
    """

    def __init__(
        self,
        config: HarliConfig,
        spec: WorkerSpec | None = None,
        target: Callable[..., None] | None = None,
        shared: SharedTensors | None = None,
        serving_weight_segments: dict[str, int] | None = None,
        kv_pool_segments: dict[str, int] | None = None,
    ):
        from harli_sgl.worker.main import run_worker

        self.config = config
        self.serving_weight_segments = serving_weight_segments
        self.kv_pool_segments = kv_pool_segments
        self._target = target or run_worker
        self._args = (shared,) if shared is not None else ()
        self._ctx = zmq.Context.instance()
        to_addr, from_addr = new_ipc_path("to-worker"), new_ipc_path("from-worker")
        self.outbox: PushQueue[ToWorker] = PushQueue(self._ctx, to_addr, bind=True)
        self.inbox: PullQueue[FromWorker] = PullQueue(self._ctx, from_addr, bind=True)
        base = spec or WorkerSpec(generation=0, to_worker_addr="", from_worker_addr="",
                                  parent_pid=0, config=config)
        self._spec = replace(base, to_worker_addr=to_addr, from_worker_addr=from_addr,
                             parent_pid=os.getpid())
        self.generation = 0
        self.restarts = 0
        self.last_exit: str | None = None
        self._proc: mp.process.BaseProcess | None = None
        self._ready = False
        self._started_at = 0.0
        self._last_seen = 0.0
        self._last_sent = 0.0
        self._loop_age_s = 0.0
        self._cpu_at_seen: float | None = None
        self._cpu_read_at = 0.0
        self.busy_not_hung = 0  # silences forgiven because the worker was using CPU
        self._restart_at: float | None = None
        self._backoff = config.restart_backoff_s
        self._closed = False
        self.hello: WorkerHello | None = None
        # Called once a worker is known dead (so its pool leases can be returned).
        self.on_death: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        self.generation += 1
        self.outbox.generation = self.inbox.generation = self.generation
        spec = replace(self._spec, generation=self.generation)
        proc = mp.get_context("spawn").Process(
            target=self._target, args=(spec, *self._args), name="harli::finetune", daemon=True,
        )
        with _worker_environment(self.config, self._spec.corun_means):
            proc.start()
        self._proc = proc
        self._ready = False
        self.hello = None
        self._started_at = self._last_seen = time.monotonic()
        self._cpu_at_seen, self._cpu_read_at, self._loop_age_s = None, 0.0, 0.0
        self._restart_at = None
        logger.info("harli: started finetune worker pid=%s generation=%d", proc.pid, self.generation)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self._closed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            self.outbox.send(Shutdown("server shutting down"))
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self._proc = None
        self.outbox.close()
        self.inbox.close()

    # -- called from the scheduler loop ---------------------------------------------

    def check(self, now: float | None = None) -> None:
        """Heartbeat, detect death or hangs, and respawn when the backoff has passed."""
        if self._closed:
            return
        now = time.monotonic() if now is None else now
        proc = self._proc
        if proc is None:
            if self._restart_at is not None and now >= self._restart_at:
                self._spawn()
            return
        if not proc.is_alive():
            self._on_death(proc, now)
            return
        if self._ready and now - self._last_seen > self.config.worker_heartbeat_timeout_s:
            cpu = _cpu_seconds(proc.pid)
            if cpu is not None and self._cpu_at_seen is not None and cpu > self._cpu_at_seen:
                # Silent but computing: starved or busy, not hung. Judge again later.
                self.busy_not_hung += 1
                logger.warning("harli: finetune worker pid=%s silent for %.1fs but using CPU "
                               "(busy host); not hung", proc.pid, now - self._last_seen)
                self._last_seen, self._cpu_at_seen = now, cpu
            else:
                logger.error("harli: finetune worker pid=%s silent for %.1fs and idle; killing it "
                             "as hung", proc.pid, now - self._last_seen)
                proc.kill()
                return
        if self._ready and self._loop_age_s > LOOP_STALL_LIMIT_S:
            logger.error("harli: finetune worker pid=%s message loop stuck for %.0fs; killing it "
                         "as hung", proc.pid, self._loop_age_s)
            self._loop_age_s = 0.0
            proc.kill()
            return
        if not self._ready and now - self._started_at > STARTUP_TIMEOUT_S:
            logger.error("harli: finetune worker pid=%s did not start in %.0fs; killing it",
                         proc.pid, STARTUP_TIMEOUT_S)
            proc.kill()
            return
        if now - self._last_sent >= self.config.worker_heartbeat_s:
            self.outbox.send(Heartbeat(time.time()))
            self._last_sent = now

    def _on_death(self, proc: mp.process.BaseProcess, now: float) -> None:
        proc.join(0)
        code = proc.exitcode
        self.last_exit = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        lived = now - self._started_at
        if lived >= STABLE_AFTER_S:
            self._backoff = self.config.restart_backoff_s
        self.restarts += 1
        self._proc = None
        self._ready = False
        self._restart_at = now + self._backoff
        if self.on_death is not None:
            self.on_death()
        logger.error(
            "harli: finetune worker pid=%s died (%s) after %.1fs; serving continues; "
            "restart #%d in %.1fs", proc.pid, self.last_exit, lived, self.restarts, self._backoff,
        )
        self._backoff = min(self._backoff * 2, self.config.restart_backoff_max_s)

    def kill_now(self) -> None:
        """Kill the worker and wait until it is gone (its memory can no longer change)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(10.0)
        if proc is not None:
            self._on_death(proc, time.monotonic())

    # -- message handlers (registered in the scheduler's dispatcher) -------------------

    def on_heartbeat(self, msg: Heartbeat) -> None:
        self.note_alive()
        self._loop_age_s = msg.loop_age_s

    def on_hello(self, msg: WorkerHello) -> None:
        self._ready = True
        self.note_alive()
        self.hello = msg
        logger.info("harli: finetune worker pid=%s ready (generation %d, %d layers, %.1f MB shared "
                    "base weights)", msg.pid, msg.generation, msg.num_layers, msg.base_param_bytes / 2**20)

    def note_alive(self) -> None:
        """Any message from the worker proves it is alive."""
        now = time.monotonic()
        self._last_seen = now
        if self._proc is not None and now - self._cpu_read_at >= 1.0:
            self._cpu_read_at = now
            self._cpu_at_seen = _cpu_seconds(self._proc.pid)

    # -- views ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready and self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def status(self) -> dict:
        return {
            "alive": self.ready,
            "pid": self.pid if self.ready else None,
            "restarts": self.restarts,
            "busy_not_hung": self.busy_not_hung,
            "generation": self.generation,
            "last_exit": self.last_exit,
            "shared_base_bytes": self.hello.base_param_bytes if self.hello else None,
            "private_base_bytes": self.hello.private_base_bytes if self.hello else None,
            # {"dev:inode": bytes}: the worker's frozen parameters, and (set by the scheduler
            # that shares them) the serving weights and the KV pool. Equal keys = same memory.
            "base_weight_segments": self.hello.base_weight_segments if self.hello else None,
            "serving_weight_segments": self.serving_weight_segments,
            "kv_pool_segments": self.kv_pool_segments,
        }


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
