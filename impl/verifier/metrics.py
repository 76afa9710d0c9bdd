"""Prometheus metrics of the verify pipeline (names as SPEC lists them).

Why this module exists: the pipeline itself holds no metrics state -- it yields
``Emit(event)`` effects and a driver hands them to a sink. :class:`Metrics` is
that sink: it owns its *own* ``CollectorRegistry`` (no process-global state, so
tests, benchmarks and several pipelines in one process never share counters).

Every counter carries a ``tenant`` label: the tenant id for resolved tenants,
``_unknown`` for requests whose ``X-Tenant-Id`` names no tenant (an attacker
cannot grow label cardinality), ``_none`` before a tenant is known.

Bounded series, top-N by activity: at most ``max_tenants`` tenants get series of
their own; every other tenant is counted under ``_other``, so a scrape stays the
same size with 10,000 tenants (before: 7,300 tenants made a 9.3 MB, 4 s scrape
that froze the worker). Which tenants: free slots go to tenants in the order they
are first seen; at every collection (a scrape) the tenants are ranked by their
activity (pipeline events, halved at each collection: recent traffic weighs
most); a newcomer takes the slot of the weakest incumbent only if its activity
is more than twice the incumbent's plus ``PROMOTE_MARGIN`` (8) events
(hysteresis: evenly spread, sparse traffic over many tenants does not make the
series churn), ties go by name (deterministic). Counters stay
monotonic and nothing is lost: a tenant that leaves the top hands its counts
(and latency buckets) to ``_other`` and its series ends; a tenant that enters
starts a series at 0 (what it did before stays in ``_other``). So at every scrape
the sum over a metric's series is every event counted. ``_unknown`` and
``_none`` are always their own. ``flk bench metrics`` measures the scrape and
the worst latency of live requests during scrapes.

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

import heapq
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import _use_created
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# flk serve's flk_http_latency_seconds (submit latency measured by the server); the simulator's
# scrapes bucket their regions' answers the same, so a controller reads the same p95 from both
HTTP_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

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
    prometheus children when the registry is collected (register it first).
    ``before_fold`` (if set) runs at each collection, before the fold."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the loop thread counts; a batch or replay thread may too
        self._counts: dict = {}  # counter child -> pending increment
        self._observed: dict = {}  # histogram child -> [pending bucket counts..., pending sum]
        self.before_fold = None

    def inc(self, child, amount: float = 1.0) -> None:
        with self.lock:
            self._counts[child] = self._counts.get(child, 0.0) + amount

    def inc_locked(self, child, amount: float = 1.0) -> None:
        """:meth:`inc` with :attr:`lock` held by the caller."""
        self._counts[child] = self._counts.get(child, 0.0) + amount

    def observe(self, child, value: float) -> None:
        bounds = getattr(child, "_upper_bounds", None)
        if bounds is None:  # not a prometheus_client histogram child: no shortcut
            child.observe(value)
            return
        with self.lock:
            self._observe_locked(child, bounds, value)

    def _observe_locked(self, child, bounds, value: float) -> None:
        pending = self.pending_locked(child)
        pending[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value
        pending[-1] += value

    def pending_locked(self, child) -> list:
        """(Lock held.) The pending observations of histogram ``child``: a count per bucket,
        then the sum (the first bucket whose bound is >= a value counts it)."""
        pending = self._observed.get(child)
        if pending is None:
            pending = self._observed[child] = [0] * len(child._upper_bounds) + [0.0]
        return pending

    def take_locked(self, child) -> tuple[float, list | None]:
        """(Lock held.) The pending count and observations of ``child``, removed."""
        return self._counts.pop(child, 0.0), self._observed.pop(child, None)

    def fold(self) -> None:
        """Add what is pending to the prometheus children."""
        with self.lock:
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
        if self.before_fold is not None:
            self.before_fold()
        self.fold()
        return []


DEFAULT_MAX_TENANTS = 100  # METRICS_MAX_TENANTS
PROMOTE_MARGIN = 8.0  # events: a newcomer's activity must exceed twice the weakest incumbent's plus this
OTHER_TENANTS = "_other"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_tenants: int | None = DEFAULT_MAX_TENANTS) -> None:
        self.max_tenants = max_tenants  # None: every tenant labelled (unbounded; tests and benches' anchor)
        self._labelled: set[str] = set()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # the pipeline's families live in a registry of their own, shown in ``registry`` by one
        # collector (:class:`_Families`): :meth:`exposition` writes them with :func:`render_families`
        self._own = CollectorRegistry(auto_describe=True)
        r = self._own
        self.tally = Tally()
        self._lock = self.tally.lock  # one lock: labels, pending counts, the top-N swap
        self._rank_lock = threading.Lock()  # one ranking at a time (two scrapes at once)
        self._activity: dict[str, float] = {}  # tenant -> events since the last ranking
        self._scores: dict[str, float] = {}  # tenant -> decayed activity * _scale (the ranking thread's)
        self._scale = 1.0
        self.rankings = 0
        if max_tenants is not None:
            self.tally.before_fold = self.rank
        self.registry.register(self.tally)
        self.registry.register(_Families(self._own))
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
        self._keys_of: dict[str, list[tuple]] = {}  # tenant -> its keys in _children

    def label(self, tenant: str) -> str:
        """The tenant label a count of ``tenant`` goes to now (``_other`` outside the top-N)."""
        with self._lock:
            return self._label_locked(tenant)

    def _label_locked(self, tenant: str) -> str:
        if tenant in self._labelled or tenant.startswith("_"):
            return tenant
        if self.max_tenants is not None and len(self._labelled) >= self.max_tenants:
            return OTHER_TENANTS
        self._labelled.add(tenant)
        return tenant

    def _child_locked(self, attr: str, tenant: str, status) -> object:
        key = (attr, tenant, status)
        child = self._children.get(key)
        if child is None:  # first event of this kind and tenant: look the labelled child up once
            metric = self.latency if attr == "latency" else getattr(self, attr)
            child = metric.labels(tenant=tenant, status=str(status)) if status is not None else metric.labels(tenant=tenant)
            self._children[key] = child
            self._keys_of.setdefault(tenant, []).append(key)
        return child

    def __call__(self, event: Mapping) -> None:
        """The Emit sink: count one pipeline event."""
        if _COUNTED.get(event.get("kind")) is None:
            return
        with self._lock:
            self._count_locked(event)

    def count_many(self, events: list) -> None:
        """Count ``events`` as :meth:`__call__` counts each, under one lock (a batch's). Events
        of one kind, tenant and status are summed first (a batch's are mostly of one or two:
        one label look-up and one pending increment each, not one per event); tenants meet
        the top-N labelling in the order of their first event, as one by one."""
        if not events:
            return
        groups: dict = {}
        get = groups.get
        for event in events:
            key = (event.get("kind"), event.get("tenant_label"), event.get("status", 0))
            groups[key] = get(key, 0) + 1
        counted = _COUNTED
        with self._lock:
            for (kind, label, status), n in groups.items():
                attr = counted.get(kind)
                if attr is not None:
                    self._count_locked_n(attr, label or "_none", status if attr == "rejected" else None, n)

    def _count_locked(self, event: Mapping) -> None:
        attr = _COUNTED.get(event.get("kind"))
        if attr is None:
            return
        self._count_locked_n(attr, event.get("tenant_label") or "_none",
                             event.get("status", 0) if attr == "rejected" else None, 1)

    def _count_locked_n(self, attr: str, tenant: str, status, n: int) -> None:
        """(Lock held.) ``n`` events counted under ``attr`` for ``tenant`` (``status``: rejected's)."""
        if self.max_tenants is not None:  # the ranking's input (no ranking without a cap)
            self._activity[tenant] = self._activity.get(tenant, 0.0) + n
        self.tally.inc_locked(self._child_locked(attr, self._label_locked(tenant), status), float(n))

    def observe_latency(self, tenant_label: str, seconds: float) -> None:
        self.observe_latencies(((tenant_label, seconds),))

    def observe_latencies(self, observed: Iterable[tuple[str, float]]) -> None:
        """:meth:`observe_latency` of each ``(tenant_label, seconds)``, under one lock (a batch's)."""
        with self._lock:
            # a batch's observations are mostly of one tenant and one latency (its answers leave
            # together): the child and the bucket are looked up when either changes
            pending, last, last_s, bucket = None, None, None, 0
            for tenant_label, seconds in observed:
                if pending is None or tenant_label != last:
                    last, last_s = tenant_label, None
                    child = self._child_locked("latency", self._label_locked(tenant_label or "_none"), None)
                    pending = self.tally.pending_locked(child)
                    bounds = child._upper_bounds
                if seconds != last_s:
                    last_s, bucket = seconds, bisect_left(bounds, seconds)
                pending[bucket] += 1
                pending[-1] += seconds

    # -- top-N by activity -----------------------------------------------------------
    def rank(self) -> None:
        """Give the ``max_tenants`` slots to the most active tenants (see the module
        docstring); runs at every collection, on the scraping thread. The ranking is
        computed outside the counting lock; only the swap holds it."""
        n = self.max_tenants
        if n is None:
            return
        with self._rank_lock:
            with self._lock:
                fresh, self._activity = self._activity, {}
                labelled = set(self._labelled)
            # decay without touching every score: scores are kept multiplied by ``_scale``,
            # which doubles at each ranking (every true score halves); renormalised rarely
            self._scale *= 2.0
            scale, scores = self._scale, self._scores
            for tenant, count in fresh.items():
                if not tenant.startswith("_"):
                    scores[tenant] = scores.get(tenant, 0.0) + count * scale
            if scale > 1e100:
                self._renormalise(labelled)
            top = self._challenge(labelled, {t: scores[t] for t in fresh if t in scores}, scores,
                                  n, PROMOTE_MARGIN * self._scale)
            if top == labelled:
                return
            with self._lock:
                self._swap_locked(top)
            self.rankings += 1

    def _renormalise(self, labelled: set[str]) -> None:
        scale, scores = self._scale, self._scores
        for tenant in list(scores):
            value = scores[tenant] / scale
            if value < 1e-3 and tenant not in labelled:
                del scores[tenant]
            else:
                scores[tenant] = value
        self._scale = 1.0

    @staticmethod
    def _challenge(labelled: set[str], fresh: dict[str, float], scores: dict[str, float], n: int,
                   margin: float) -> set[str]:
        """The next holders of the ``n`` slots. Newcomers are the tenants with activity since
        the last ranking (``fresh``: their scores); free slots go to the busiest; a newcomer
        takes an incumbent's slot only if its score is more than twice the weakest
        incumbent's plus ``margin`` (:data:`PROMOTE_MARGIN` events; hysteresis: evenly
        spread, sparse traffic -- one request now and then per tenant -- does not make the
        series churn; a tenant that is clearly busier does get in). Deterministic: ties by
        name. Costs the fresh tenants and the slots, not every tenant ever seen."""
        top = set(labelled)
        weakest = sorted(labelled, key=lambda t: (scores.get(t, 0.0), t))
        newcomers = heapq.nlargest(n, ((v, t) for t, v in fresh.items() if t not in labelled))
        for score, tenant in newcomers:
            if len(top) < n:
                top.add(tenant)
            elif weakest and score > 2.0 * scores.get(weakest[0], 0.0) + margin:
                top.discard(weakest.pop(0))
                top.add(tenant)
            else:
                break
        return top

    def _swap_locked(self, top: set[str]) -> None:
        """(Counting lock held.) ``top`` holds the slots; a tenant that leaves hands its
        counts to ``_other``."""
        for tenant in self._labelled - top:
            for key in self._keys_of.pop(tenant, ()):
                attr, _, status = key
                child = self._children.pop(key)
                pending, observed = self.tally.take_locked(child)
                other = self._child_locked(attr, OTHER_TENANTS, status)
                metric = self.latency if attr == "latency" else getattr(self, attr)
                if attr == "latency":
                    moved = [b.get() for b in child._buckets] + [child._sum.get()]
                    if observed is not None:
                        moved = [a + b for a, b in zip(moved, observed, strict=True)]
                    into = self.tally._observed.get(other)
                    if into is None:
                        into = self.tally._observed[other] = [0] * len(child._upper_bounds) + [0.0]
                    for i, v in enumerate(moved):
                        into[i] += v
                else:
                    self.tally.inc_locked(other, child._value.get() + pending)
                if status is not None:
                    metric.remove(tenant, str(status))
                else:
                    metric.remove(tenant)
        self._labelled = set(top)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 if absent), e.g. ``value("flk_accepted_total", tenant="t1")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def exposition(self) -> bytes:
        """The Prometheus text of the whole registry: what ``generate_latest(registry)`` gives
        (a differential test holds them equal), with the pipeline's per-tenant families written
        by :func:`render_families` (about 4x faster) -- a scrape holds the GIL that long."""
        _RENDERING.on = True
        try:
            rest = generate_latest(self.registry)  # folds and ranks first (the Tally collects first)
        finally:
            _RENDERING.on = False
        return rest + render_families(self._families())

    def _families(self) -> list:
        return [self.ingest, self.dedup_hits, self.accepted, self.escalated, self.signature_errors,
                self.wal_errors, self.dedup_conflicts, self.rejected, self.store_unavailable, self.latency]


_RENDERING = threading.local()  # .on: exposition() writes the pipeline's families itself


class _Families:
    """The pipeline's families as one collector of the outer registry (skipped while
    :meth:`Metrics.exposition` renders them itself on this thread)."""

    def __init__(self, own: CollectorRegistry) -> None:
        self.own = own

    def describe(self) -> list:
        return []

    def collect(self):
        if getattr(_RENDERING, "on", False):
            return []
        return list(self.own.collect())


def render_families(metrics: list) -> bytes:
    """Prometheus text of prometheus_client ``Counter`` / ``Histogram`` objects with labels,
    byte for byte what ``generate_latest`` writes for them (``_created`` samples in a gauge
    section after each family), without building a ``Sample`` per value: label strings are
    made once per series per call, values are read straight from the children."""
    out: list[str] = []
    for metric in metrics:
        name, doc = metric._name, metric._documentation.replace("\\", r"\\").replace("\n", r"\n")
        counter = metric._type == "counter"
        head = f"{name}_total" if counter else name
        out.append(f"# HELP {head} {doc}\n# TYPE {head} {metric._type}\n")
        with metric._lock:
            children = list(metric._metrics.items())
        created = []
        names = metric._labelnames
        for values, child in children:
            lab = _label_text(names, values)
            if counter:
                out.append(f"{name}_total{{{lab}}} {floatToGoString(child._value.get())}\n")
            else:
                acc = 0.0
                pre, post = _label_text(names, values, (("le", "\0"),)).split("\0", 1)
                for le, bucket in zip(_bounds_text(child._upper_bounds), child._buckets, strict=True):
                    acc += bucket.get()
                    out.append(f"{name}_bucket{{{pre}{le}{post}}} {floatToGoString(acc)}\n")
                out.append(f"{name}_count{{{lab}}} {floatToGoString(acc)}\n")
                if child._upper_bounds[0] >= 0:
                    out.append(f"{name}_sum{{{lab}}} {floatToGoString(child._sum.get())}\n")
            if _use_created:
                created.append(f"{name}_created{{{lab}}} {floatToGoString(child._created)}\n")
        if created:
            out.append(f"# HELP {name}_created {doc}\n# TYPE {name}_created gauge\n")
            out.extend(created)
    return "".join(out).encode("utf-8")


def _label_text(names: tuple, values: tuple, extra: tuple = ()) -> str:
    pairs = sorted([*zip(names, values, strict=True), *extra])
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


_BOUNDS: dict[tuple, list[str]] = {}


def _bounds_text(bounds) -> list[str]:
    key = tuple(bounds)
    text = _BOUNDS.get(key)
    if text is None:
        text = _BOUNDS[key] = [floatToGoString(b) for b in key]
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
