"""Harli's Prometheus metrics, exported next to SGLang's when ``--enable-metrics`` is on.

SGLang runs prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
is set before its children start), and the main process's ``/metrics`` merges
every process's files. So gauges created here, in the scheduler process, with
``multiprocess_mode="mostrecent"`` show up on the same ``/metrics`` page.
They mirror ``/harli/status`` and are refreshed at most once a second. Totals
(trained tokens, restarts, SLO violations, slot overruns) are Prometheus
counters, advanced by the growth of the lifetime totals since the last refresh.
"""

from __future__ import annotations

import time

REFRESH_S = 1.0


class HarliPrometheus:
    def __init__(self, model_name: str):
        from prometheus_client import Counter, Gauge

        labels = ["model_name"]

        def counter(name: str, doc: str):
            c = Counter(f"harli:{name}", doc, labelnames=labels)
            c.labels(model_name)  # exported at 0 from the start, not only after a first event
            return c

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()):
            return Gauge(f"harli:{name}", doc, labelnames=labels + list(extra),
                         multiprocess_mode="mostrecent")

        self.model = model_name
        self.slo_attainment = gauge("slo_attainment", "Fraction of recent requests with TPOT <= SLO.")
        self.tpot = gauge("tpot_ms", "TPOT of recent requests (ms).", ("quantile",))
        self.finetune_tps = gauge("finetune_tokens_per_s", "Trained tokens per second (recent).")
        self.trained_total = counter("trained_tokens", "Trained tokens since start.")
        self.slot_units = gauge("slot_units", "Granted slot sizes (token-layers).", ("quantile",))
        self.mape = gauge("predictor_mape", "Held-out MAPE of the latency predictor.", ("stage",))
        self.worker_alive = gauge("worker_alive", "1 if the finetune worker is up.")
        self.worker_restarts = counter("worker_restarts", "Finetune worker restarts.")
        self.violations = counter("slo_violations", "Requests that finished with TPOT > SLO.")
        self.overruns = counter("slot_overruns", "Serial slots the worker overran.")
        self._seen: dict[str, float] = {}
        self.tpot_slo = gauge("tpot_slo_ms", "The TPOT SLO (ms).")
        self.harvest = gauge("harvest", "Finetune work per second / the same job's on an idle server.")
        self.corun_share = gauge("corun_share", "The worker's share of the device while co-running "
                                 "(0 when it is not co-running).")
        self.arrangement_fraction = gauge("arrangement_time_fraction",
                                          "Fraction of iteration time per arrangement.",
                                          ("arrangement",))
        self.stop_latency = gauge("corun_stop_latency_ms", "Co-run stop latency (ms).", ("quantile",))
        self.leased_tokens = gauge("pool_leased_tokens", "KV-pool tokens lent to the finetune worker.")
        self.leases = gauge("pool_leases", "Leases the finetune worker holds.")
        self._last = 0.0

    def due(self) -> bool:
        """True at most once per refresh period (so status is only built when needed)."""
        now = time.monotonic()
        if now - self._last < REFRESH_S:
            return False
        self._last = now
        return True

    def update(self, status: dict) -> None:
        m = self.model

        def put(g, value, *extra):
            if value is not None:
                g.labels(m, *extra).set(value)

        put(self.slo_attainment, status["slo_attainment"])
        put(self.tpot, status["tpot_ms"]["p50"], "0.5")
        put(self.tpot, status["tpot_ms"]["p99"], "0.99")
        put(self.finetune_tps, status["finetune_tokens_per_s"])
        self._advance("trained", self.trained_total, status["totals"]["trained_tokens"])
        self._advance("violations", self.violations, status["totals"]["slo_violations"])
        self._advance("overruns", self.overruns, status["slots"]["overrun"])
        put(self.slot_units, status["slots"]["units_p50"], "0.5")
        put(self.slot_units, status["slots"]["units_p99"], "0.99")
        put(self.mape, status["predictor"]["stage1"]["mape"], "1")
        put(self.mape, status["predictor"]["stage2"]["mape"], "2")
        put(self.worker_alive, 1.0 if status["worker"]["alive"] else 0.0)
        self._advance("restarts", self.worker_restarts, status["worker"]["restarts"])
        put(self.tpot_slo, status["tpot_slo_ms"])
        arrangement = status.get("arrangement") or {}
        put(self.harvest, (status.get("harvest") or {}).get("value"))
        put(self.corun_share, arrangement.get("share"))
        for name in ("none", "serial", "concurrent", "hybrid"):
            put(self.arrangement_fraction, arrangement.get("time_fraction", {}).get(name, 0.0), name)
        stop = arrangement.get("stop_latency_ms") or {}
        put(self.stop_latency, stop.get("p50"), "0.5")
        put(self.stop_latency, stop.get("p99"), "0.99")
        for arr, stats in (status["predictor"].get("stage2_by_arrangement") or {}).items():
            put(self.mape, stats.get("mape"), f"2-{arr}")
        pool = status.get("pool") or {}
        put(self.leased_tokens, pool.get("leased_tokens"))
        put(self.leases, pool.get("leases"))

    def _advance(self, key: str, counter, total: float | None) -> None:
        """Move a counter to a lifetime total (totals only grow; a reset restarts from 0)."""
        if total is None:
            return
        seen = self._seen.get(key, 0.0)
        if total > seen:
            counter.labels(self.model).inc(total - seen)
        self._seen[key] = max(seen, total)
