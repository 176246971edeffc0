"""Entry point of the finetune worker process (spawn-safe, one top-level function)."""

from __future__ import annotations

import logging
import os
import signal
import sys

from harli_sgl.worker.spec import SharedTensors, WorkerSpec


def run_worker(spec: WorkerSpec, shared: SharedTensors | None = None) -> None:
    """Run one finetune worker incarnation until told to stop or orphaned.

    ``shared`` carries the tensors mapped zero-copy from the scheduler (the serving
    weights, the KV pool's buffers); None: a worker without a model (tests).
    """
    try:
        import setproctitle

        setproctitle.setproctitle("harli::finetune")
    except ImportError:  # the engine-agnostic core also runs where setproctitle is absent
        pass
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True,
        format=f"[%(asctime)s harli::finetune g{spec.generation}] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    from harli_sgl.worker.worker import FinetuneWorker

    worker = FinetuneWorker(spec, shared)
    # SIGTERM/SIGINT end the loop between pieces, so a checkpoint or a lease
    # acknowledgement is never cut in half.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: worker.stop("SIGINT"))
    try:
        worker.run()
    finally:
        worker.close()
    logging.getLogger(__name__).info("worker pid=%d exiting", os.getpid())
