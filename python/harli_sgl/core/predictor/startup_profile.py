"""The start-up latency profile: real decode load, real slots, bounded in time.

Runs once per (model, device, dtype, threads): when the scheduler reports no
profile (none was persisted for this key), this drives the server through its
own public API right after it is ready. It waits for the finetune worker,
switches the scheduler into profiling (busy iterations alternate between no
slot and a synthetic slot of sweeping size), and sends bursts of ``/generate``
requests at batch sizes 1..max with short and long prompts, so stage 1 sees
decode and prefill across the batch space and stage 2 sees slots of every
size. It stops at ``--harli-startup-profile-s`` whatever is left: requests of a
burst still running then are abandoned by this client (their time-out is the
budget left), and profiling is turned off, which makes the scheduler persist
the fitted predictor. The bound covers the profiling phase; the wait for the
finetune worker to come up before it (at most 180 s) is logged apart. Every
step is logged. It runs in a daemon thread and never delays serving.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from harli_sgl.auth_headers import admin_headers
from harli_sgl.config import HarliConfig

logger = logging.getLogger(__name__)

OUTPUT_TOKENS = 24
PROMPT_LENS = (32, 384)


class StartupProfiler:
    def __init__(self, base_url: str, api_key: str | None, config: HarliConfig,
                 max_batch: int, vocab: int, admin_api_key: str | None = None):
        self.base_url = base_url
        # /harli/profile is admin-optional: with --admin-api-key set only that key opens it.
        self.admin_headers = admin_headers(api_key, admin_api_key)
        self.config = config
        self.max_batch = max_batch
        self.vocab = vocab

    def start(self) -> None:
        threading.Thread(target=self._run_logged, name="harli-startup-profile", daemon=True).start()

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception:
            logger.exception("harli: the start-up latency profile failed; the predictor learns online")
            try:
                self._set_profiling(False)
            except Exception:
                logger.exception("harli: could not end the profile phase")

    def _status(self) -> dict:
        # The operator's key: only the operator sees the detailed status (tenants see their jobs).
        return requests.get(self.base_url + "/harli/status", headers=self.admin_headers,
                            timeout=60).json()

    def _set_profiling(self, on: bool) -> None:
        r = requests.post(self.base_url + "/harli/profile", headers=self.admin_headers, timeout=60,
                          json={"enabled": on})
        r.raise_for_status()  # a refused toggle would silently profile nothing

    def run(self) -> None:
        if self.config.startup_profile_s <= 0 or not self.config.finetune_enabled:
            return
        if self._status()["predictor"]["profiled"]:
            logger.info("harli: reusing the persisted latency profile")
            return
        deadline = time.monotonic() + 180
        waited = time.monotonic()
        while not self._status()["worker"]["alive"]:
            if time.monotonic() > deadline:
                logger.warning("harli: the finetune worker did not start; profiling decode only")
                break
            time.sleep(1)
        budget = self.config.startup_profile_s
        logger.info("harli: profiling decode latency with and without slots (at most %.0fs; waited "
                    "%.0fs for the worker first)", budget, time.monotonic() - waited)
        self._set_profiling(True)
        end = time.monotonic() + budget
        sizes = sorted({1, 2, 4, 8, self.max_batch} & set(range(1, self.max_batch + 1)))
        rng = random.Random(0)
        try:
            for prompt_len in PROMPT_LENS:
                for bs in sizes:
                    if time.monotonic() > end:
                        break
                    self._burst(bs, prompt_len, rng, end)
        finally:
            self._set_profiling(False)
        p = self._status()["predictor"]
        logger.info("harli: profile fitted: stage 1 %d samples, stage 2 %d samples",
                    p["stage1"]["samples"], p["stage2"]["samples"])

    def _burst(self, bs: int, prompt_len: int, rng: random.Random, end: float) -> None:
        def one(_):
            ids = [rng.randrange(self.vocab) for _ in range(prompt_len)]
            try:
                # The operator's key: with only --admin-api-key set and tenants' keys in the
                # store, a request without one would be refused.
                requests.post(self.base_url + "/generate", headers=self.admin_headers,
                              timeout=max(1.0, end - time.monotonic()), json={
                                  "input_ids": ids, "sampling_params": {
                                      "max_new_tokens": OUTPUT_TOKENS, "temperature": 0,
                                      "ignore_eos": True}})
            except requests.RequestException:
                pass  # past the budget: the profile ends without this request
        with ThreadPoolExecutor(bs) as pool:
            list(pool.map(one, range(bs)))
