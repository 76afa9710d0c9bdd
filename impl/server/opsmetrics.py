"""Metrics the alert rules need that no other collector exports.

Why this module exists: the alert rules shipped in ``deploy/prometheus/`` include
WAL disk pressure and a slow dedup store, and the KPI dashboard shows the KPIs a
deployment can estimate from its own counters. :class:`OpsCollector` is one
Prometheus collector, registered next to the pipeline's metrics, that reads them
when /metrics is scraped (nothing on the submit path):

* ``flk_wal_disk_used_ratio`` / ``flk_wal_disk_free_bytes`` -- the inbox WAL's file system;
* ``flk_store_call_seconds`` -- dedup store call time, admit to answer
  (:class:`flk.impl.verifier.admission.StoreCallTimes`);
* ``flk_store_failed_items_total`` -- dedup store items answered 503: those of calls that failed
  and those the open breaker refused (``GuardedStore.unanswered_items``);
* ``flk_kpi_escalation_ratio`` -- escalated / verified since start;
* ``flk_kpi_rejected_untrusted_ratio`` -- signature failures and payload conflicts / all
  submissions that reached a verdict, since start (an estimate of containment: the
  server cannot know which of its accepts were untrustworthy; the simulator can, see
  :mod:`flk.sim.kpi`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from ..verifier.admission import STORE_CALL_BUCKETS


class OpsCollector:
    def __init__(self, wal_dir: Callable[[], str | None], guarded: Callable[[], Any],
                 value: Callable[[str], float]) -> None:
        self.wal_dir = wal_dir
        self.guarded = guarded
        self.value = value  # sum of a pipeline counter over its labels

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        path = self.wal_dir()
        if path:
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                usage = None
            if usage is not None and usage.total:
                yield GaugeMetricFamily("flk_wal_disk_used_ratio", "Share of the inbox WAL file system in use",
                                        value=(usage.total - usage.free) / usage.total)
                yield GaugeMetricFamily("flk_wal_disk_free_bytes", "Free bytes on the inbox WAL file system",
                                        value=float(usage.free))
        guarded = self.guarded()
        if guarded is not None:
            times = guarded.call_seconds
            buckets = [(repr(b), float(n)) for b, n in zip(STORE_CALL_BUCKETS, times.buckets, strict=True)]
            buckets.append(("+Inf", float(times.count)))
            yield HistogramMetricFamily("flk_store_call_seconds", "Dedup store call time (admit to answer)",
                                        buckets=buckets, sum_value=times.total)
            yield CounterMetricFamily("flk_store_failed_items", "Dedup store items (a request's lookup or write) "
                                      "failed: by a failed call or refused by the open breaker (answered 503)",
                                      value=float(guarded.unanswered_items))
        accepted, escalated = self.value("flk_accepted_total"), self.value("flk_escalated_total")
        untrusted = self.value("flk_signature_errors_total") + self.value("flk_dedup_conflicts_total")
        verdicts = accepted + escalated + untrusted
        yield GaugeMetricFamily("flk_kpi_escalation_ratio", "Escalated / verified submissions since start",
                                value=escalated / (accepted + escalated) if accepted + escalated else 0.0)
        yield GaugeMetricFamily("flk_kpi_rejected_untrusted_ratio", "Signature failures and payload conflicts / "
                                "submissions with a verdict, since start", value=untrusted / verdicts if verdicts else 0.0)


def counter_sum(registry: Any) -> Callable[[str], float]:
    """``value(name)``: a sample's sum over all its label sets in ``registry`` (0.0 if absent).
    Reads the already-collected families of the other collectors, never itself."""
    def value(name: str) -> float:
        total = 0.0
        family = name[:-len("_total")] if name.endswith("_total") else name
        collector = registry._names_to_collectors.get(family) or registry._names_to_collectors.get(name)
        if collector is None:
            return 0.0
        for metric in collector.collect():
            for s in metric.samples:
                if s.name == name:
                    total += s.value
        return total
    return value
