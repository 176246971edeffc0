"""Publish finished adapters into SGLang's LoRA serving, through its public API.

A job only becomes ``succeeded`` once its adapter is servable, so a client that
sees ``succeeded`` can use ``model="<base>:<fine_tuned_model>"`` at once. The
worker therefore loads the adapter itself, with the same HTTP call an operator
would make (``POST /load_lora_adapter``), and marks the job afterwards. Loading
goes through SGLang's TokenizerManager, which owns the adapter registry that
request routing consults; no SGLang internals are touched.

Publishing is idempotent: ``GET /v1/models`` lists loaded adapters, and only
missing ones are loaded. The job executor calls it on a background thread of
its own, so the worker's loop keeps answering grants and heartbeats while
SGLang serves the load (the scheduler that loads the adapter is the one that
grants the slots). It retries with backoff while the HTTP server is not up yet
(at start-up the worker is spawned before uvicorn listens).

Keys: both calls carry the operator's key (the admin key when one is set, else
``--api-key``; see :mod:`harli_sgl.auth_headers`): ``/load_lora_adapter`` is
admin-optional and accepts only that key, and ``/v1/models`` shows every
tenant's adapters only to the operator (harli_sgl.sglang.openai_models), so
publishing works with any combination of keys.
"""

from __future__ import annotations

import logging
import time

import requests

from harli_sgl.auth_headers import admin_headers

logger = logging.getLogger(__name__)


class AdapterPublisher:
    def __init__(self, base_url: str, api_key: str | None, admin_api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.admin_headers = admin_headers(api_key, admin_api_key)
        self._retry_at = 0.0
        self._backoff = 0.5

    def loaded(self) -> set[str] | int | None:
        """Names of the adapters the server serves now; the HTTP status if it refuses the
        request (401/403: a key problem, which no retry fixes); None if it does not answer."""
        try:
            # The operator's key: a tenant's view of /v1/models shows only its own adapters.
            r = requests.get(self.base_url + "/v1/models", headers=self.admin_headers, timeout=10)
        except requests.RequestException:
            return None
        if r.status_code in (401, 403):
            return r.status_code
        if r.status_code != 200:
            return None
        return {m["id"] for m in r.json()["data"] if m.get("parent")}

    def publish(self, name: str, path: str) -> tuple[bool, str]:
        """(published, message). A transient failure returns (False, why) and may be retried;
        a refusal returns (False, "server refused ...")."""
        if time.monotonic() < self._retry_at:
            return False, "waiting to retry"
        loaded = self.loaded()
        if loaded is None:
            self._defer()
            return False, "server not reachable yet"
        if isinstance(loaded, int):
            return False, f"server refused to list the served adapters ({loaded}): check --api-key"
        if name in loaded:
            return True, "already loaded"
        try:
            r = requests.post(self.base_url + "/load_lora_adapter", headers=self.admin_headers,
                              json={"lora_name": name, "lora_path": path}, timeout=120)
        except requests.RequestException as e:
            self._defer()
            return False, f"load request failed: {e}"
        if r.status_code == 200 and r.json().get("success", False):
            self._backoff = 0.5
            logger.info("published adapter %s from %s", name, path)
            return True, "loaded"
        return False, f"server refused the adapter ({r.status_code}): {r.text[:500]}"

    def _defer(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 10.0)
