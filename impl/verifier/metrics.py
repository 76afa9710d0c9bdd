"""Prometheus metrics of the verify pipeline (names as SPEC lists them).

Why this module exists: the pipeline itself holds no metrics state -- it yields
``Emit(event)`` effects and a driver hands them to a sink. :class:`Metrics` is
that sink: it owns its *own* ``CollectorRegistry`` (no process-global state, so
tests, benchmarks and several pipelines in one process never share counters).

Every counter carries a ``tenant`` label: the tenant id for resolved tenants,
``_unknown`` for requests whose ``X-Tenant-Id`` names no tenant (an attacker
cannot grow label cardinality), ``_none`` before a tenant is known.

Bounded series: at most ``max_tenants`` tenants get a label of their own (the
first ones seen, in event order -- deterministic); every later tenant is counted
under ``_other``, so a scrape stays the same size with 10,000 tenants (before:
7,300 tenants made a 9.3 MB, 4 s scrape that froze the worker). ``_unknown`` and
``_none`` are always their own. ``flk bench metrics`` measures it.

Cost on the hot path: ``Counter.inc`` and ``Histogram.observe`` of
prometheus_client take a lock and run several Python calls each (an observe
of a 12-bucket histogram costs microseconds, several per request).
:class:`Tally` keeps a request's counts and observations in plain numbers
instead and folds them into the prometheus children whenever the registry is
collected (a scrape, :meth:`Metrics.value`, ``generate_latest``): it is the
registry's first collector, so every reader sees every count, and the
exposition is the same text.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
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


class Tally:
    """Counts and histogram observations in plain numbers, folded into their
    prometheus children when the registry is collected (register it first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop thread counts; a replay thread may too
        self._counts: dict = {}  # counter child -> pending increment
        self._observed: dict = {}  # histogram child -> [pending bucket counts..., pending sum]

    def inc(self, child, amount: float = 1.0) -> None:
        with self._lock:
            self._counts[child] = self._counts.get(child, 0.0) + amount

    def observe(self, child, value: float) -> None:
        bounds = getattr(child, "_upper_bounds", None)
        if bounds is None:  # not a prometheus_client histogram child: no shortcut
            child.observe(value)
            return
        with self._lock:
            pending = self._observed.get(child)
            if pending is None:
                pending = self._observed[child] = [0] * len(bounds) + [0.0]
            pending[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value
            pending[-1] += value

    def fold(self) -> None:
        """Add what is pending to the prometheus children."""
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, pending in observed.items():
            child._sum.inc(pending[-1])
            for bucket, n in zip(child._buckets, pending[:-1], strict=True):
                if n:
                    bucket.inc(n)

    def describe(self) -> list:
        return []

    def collect(self) -> list:  # the registry's first collector: fold before the others are read
        self.fold()
        return []


DEFAULT_MAX_TENANTS = 100  # METRICS_MAX_TENANTS
OTHER_TENANTS = "_other"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_tenants: int | None = DEFAULT_MAX_TENANTS) -> None:
        self.max_tenants = max_tenants  # None: every tenant labelled (unbounded; tests and benches' anchor)
        self._labelled: set[str] = set()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tally = Tally()
        r.register(self.tally)
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
        # labelled children by (counter, tenant, status): ``labels()`` takes a lock and builds
        # a key per call, which is most of a counter's cost; tenant labels are bounded (see above)
        self._children: dict[tuple, object] = {}

    def label(self, tenant: str) -> str:
        """The tenant label a count of ``tenant`` goes to (``_other`` beyond ``max_tenants``)."""
        if tenant in self._labelled or tenant.startswith("_"):
            return tenant
        if self.max_tenants is not None and len(self._labelled) >= self.max_tenants:
            return OTHER_TENANTS
        self._labelled.add(tenant)
        return tenant

    def __call__(self, event: Mapping) -> None:
        """The Emit sink: count one pipeline event."""
        kind = event.get("kind")
        attr = _COUNTED.get(kind)
        if attr is None:
            return
        tenant = self.label(event.get("tenant_label") or "_none")
        status = event.get("status", 0) if attr == "rejected" else None
        key = (attr, tenant, status)
        child = self._children.get(key)
        if child is None:  # first event of this kind and tenant: look the labelled child up once
            metric = getattr(self, attr)
            child = metric.labels(tenant=tenant, status=str(status)) if status is not None else metric.labels(tenant=tenant)
            self._children[key] = child
        self.tally.inc(child)

    def observe_latency(self, tenant_label: str, seconds: float) -> None:
        tenant = self.label(tenant_label or "_none")
        child = self._children.get(("latency", tenant, None))
        if child is None:
            child = self._children[("latency", tenant, None)] = self.latency.labels(tenant=tenant)
        self.tally.observe(child, seconds)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 if absent), e.g. ``value("flk_accepted_total", tenant="t1")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
