"""Test fixture: every checkpoint and adapter write waits before its directory is published.

A slow (or nearly full) disk, made by wrapping the ``write_dir_atomically`` that
:mod:`harli_sgl.core.trainer.snapshot` writes through: the files are written
into the temporary directory, then the write sleeps, then it is renamed into
place. In-process tests call :func:`slow_down` with pytest's ``monkeypatch``; a
spawned worker gets it from ``sitecustomize`` here with
``HARLI_TEST_WRITE_DELAY_S`` (see :func:`worker_env`). The production writer
carries none of this.
"""

from __future__ import annotations

import os
import time

FAULTS_DIR = os.path.dirname(os.path.abspath(__file__))
DELAY_ENV = "HARLI_TEST_WRITE_DELAY_S"


def delayed(write_dir_atomically, delay_s: float):
    def slow_write(target, write):
        def fill(tmp):
            write(tmp)
            time.sleep(delay_s)  # every file written, not yet renamed into place
        return write_dir_atomically(target, fill)
    return slow_write


def slow_down(monkeypatch, delay_s: float) -> None:
    """Slow every snapshot write of this process by ``delay_s``."""
    from harli_sgl.core.trainer import snapshot

    monkeypatch.setattr(snapshot, "write_dir_atomically",
                        delayed(snapshot.write_dir_atomically, delay_s))


def worker_env(monkeypatch, delay_s: float) -> None:
    """Slow every snapshot write of the worker processes this test spawns."""
    monkeypatch.setenv(DELAY_ENV, str(delay_s))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (FAULTS_DIR, os.environ.get("PYTHONPATH")) if p))
