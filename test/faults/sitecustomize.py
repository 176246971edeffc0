"""Test fixtures injected into the processes a test starts: busy cores and a slow disk.

A test puts this directory first on a server's (or a spawned worker's)
``PYTHONPATH``. With ``HARLI_TEST_WRITE_DELAY_S`` it slows every snapshot write
(:mod:`slow_disk`). With ``HARLI_TEST_CORUN_SPINNERS=N``, Python imports ``sitecustomize`` in every
process at start; this one patches :class:`~harli_sgl.worker.worker.FinetuneWorker`
once its module is imported (only the worker process imports it), so that while
it co-runs a customer job it keeps N busy processes at normal priority on
decode's cores: co-running is predicted cheap but runs slow. The production
worker carries none of this.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import subprocess
import sys

SPINNERS = int(os.environ.get("HARLI_TEST_CORUN_SPINNERS", "0"))
WRITE_DELAY_S = float(os.environ.get("HARLI_TEST_WRITE_DELAY_S", "0"))
# A busy process that spins until its parent (the worker) is gone.
SPINNER = "import os\nppid = os.getppid()\nwhile os.getppid() == ppid:\n    pass\n"
WORKER = "harli_sgl.worker.worker"
SNAPSHOT = "harli_sgl.core.trainer.snapshot"


def _interfere(worker) -> None:
    spinners = [p for p in getattr(worker, "_test_spinners", []) if p.poll() is None]
    cpus = worker.spec.config.decode_cpus or tuple(range(os.cpu_count() or 1))
    while len(spinners) < SPINNERS:
        spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
        os.sched_setaffinity(spinner.pid, cpus)
        spinners.append(spinner)
    worker._test_spinners = spinners


def _stop_interfering(worker) -> None:
    for spinner in getattr(worker, "_test_spinners", []):
        spinner.kill()
        spinner.wait()
    worker._test_spinners = []


def _patch(cls) -> None:
    run_piece, on_stop, close = cls._run_corun_piece, cls._on_corun_stop, cls.close

    def _run_corun_piece(self) -> None:
        if self.executor is not None and self._corun is not None and not self._corun.synthetic \
                and self.executor.next_piece_units(False) > 0:
            _interfere(self)
        run_piece(self)

    def _on_corun_stop(self, msg) -> None:
        _stop_interfering(self)  # the piece boundary: co-running ends here
        on_stop(self, msg)

    def _close(self) -> None:
        _stop_interfering(self)
        close(self)

    cls._run_corun_piece, cls._on_corun_stop, cls.close = _run_corun_piece, _on_corun_stop, _close


if WRITE_DELAY_S > 0:
    # Now, while this directory is on sys.path: a spawned process's sys.path is replaced by
    # its parent's before the worker imports anything.
    from slow_disk import delayed


def _slow_snapshots(module) -> None:
    module.write_dir_atomically = delayed(module.write_dir_atomically, WRITE_DELAY_S)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patch ``target`` with ``patch(module)`` once the process imports it."""

    def __init__(self, target: str, patch) -> None:
        self.target, self.patch = target, patch

    def find_spec(self, name, path, target=None):
        if name != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load, patch = spec.loader.exec_module, self.patch

        def exec_module(module) -> None:
            load(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


if SPINNERS > 0:
    sys.meta_path.insert(0, _PatchOnImport(WORKER, lambda module: _patch(module.FinetuneWorker)))
if WRITE_DELAY_S > 0:
    sys.meta_path.insert(0, _PatchOnImport(SNAPSHOT, _slow_snapshots))
