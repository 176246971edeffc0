"""``harli:jobs{status}``: this instance's job counts per status, on ``/metrics``.

Every other Harli metric mirrors the scheduler's report and is set in the
scheduler process (:mod:`.prometheus`). Job counts live in the job store, which
the main process serves; so a daemon thread here reads
``store.job_status_counts()`` every ``REFRESH_S`` and sets a gauge. The gauge is
created only once SGLang has set ``PROMETHEUS_MULTIPROC_DIR`` (inside
``launch_server``, after routes are installed): created earlier, it would live
in this process's memory, which SGLang's multiprocess ``/metrics`` never reads.
A store error is logged once per failure run and retried; it never stops
serving. In a fleet every instance reports the whole store's counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger(__name__)

REFRESH_S = 5.0


class JobCountsExporter(threading.Thread):
    def __init__(self, store, model_name: str) -> None:
        super().__init__(name="harli-job-metrics", daemon=True)
        self.store, self.model = store, model_name

    def run(self) -> None:
        while "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            time.sleep(0.5)
        from prometheus_client import Gauge

        gauge = Gauge("harli:jobs", "Fine-tuning jobs per status (this instance's store).",
                      labelnames=["model_name", "status"], multiprocess_mode="mostrecent")
        failing = False
        while True:
            try:
                for status, n in self.store.job_status_counts().items():
                    gauge.labels(self.model, status).set(n)
                failing = False
            except Exception:  # the store is down: keep serving, say so once, retry
                if not failing:
                    logger.exception("harli: could not read job counts for /metrics")
                failing = True
            time.sleep(REFRESH_S)
