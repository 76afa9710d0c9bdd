"""Prometheus metrics of the verify pipeline (names as SPEC lists them).

Why this module exists: the pipeline itself holds no metrics state -- it yields
``Emit(event)`` effects and a driver hands them to a sink. :class:`Metrics` is
that sink: it owns its *own* ``CollectorRegistry`` (no process-global state, so
tests, benchmarks and several pipelines in one process never share counters).

Every counter carries a ``tenant`` label: the tenant id for resolved tenants,
``_unknown`` for requests whose ``X-Tenant-Id`` names no tenant (an attacker
cannot grow label cardinality), ``_none`` before a tenant is known.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# event kind -> counter attribute
_COUNTED = {
    "ingest": "ingest",
    "dedup_hit": "dedup_hits",
    "accepted": "accepted",
    "escalated": "escalated",
    "signature_error": "signature_errors",
    "wal_error": "wal_errors",
    "dedup_conflict": "dedup_conflicts",
    "rejected": "rejected",
    "store_unavailable": "store_unavailable",
}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        lab = ["tenant"]
        self.ingest = Counter("flk_ingest", "PCS submissions appended to the inbox WAL", lab, registry=r)
        self.dedup_hits = Counter("flk_dedup_hits", "Duplicate submissions answered from the dedup store", lab, registry=r)
        self.accepted = Counter("flk_accepted", "Verified and accepted (200)", lab, registry=r)
        self.escalated = Counter("flk_escalated", "Verified and escalated (202)", lab, registry=r)
        self.signature_errors = Counter("flk_signature_errors", "Signature or key failures (401)", lab, registry=r)
        self.wal_errors = Counter("flk_wal_errors", "Inbox WAL append failures", lab, registry=r)
        self.dedup_conflicts = Counter(
            "flk_dedup_conflicts", "Same (tenant, pcs_id), different payload digest (409)", lab, registry=r
        )
        self.rejected = Counter("flk_rejected", "Requests rejected (400/413/429) by status", ["tenant", "status"], registry=r)
        self.store_unavailable = Counter("flk_dedup_unavailable", "Dedup store unreachable (503)", lab, registry=r)
        self.latency = Histogram(
            "flk_verify_latency_seconds", "Pipeline latency per request (driver-measured)", lab,
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def __call__(self, event: Mapping) -> None:
        """The Emit sink: count one pipeline event."""
        kind = event.get("kind")
        attr = _COUNTED.get(kind)
        if attr is None:
            return
        tenant = event.get("tenant_label") or "_none"
        metric = getattr(self, attr)
        if attr == "rejected":
            metric.labels(tenant=tenant, status=str(event.get("status", 0))).inc()
        else:
            metric.labels(tenant=tenant).inc()

    def observe_latency(self, tenant_label: str, seconds: float) -> None:
        self.latency.labels(tenant=tenant_label or "_none").observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 if absent), e.g. ``value("flk_accepted_total", tenant="t1")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
