"""Divergence detection between regions (SPEC.md section 11).

Why this module exists: replication can silently stall (a rejected segment, a
paused shipper, a region reading the wrong peers) and regions then drift
apart. The detector measures how far two regions' dedup states are apart and
raises an alert with a severity, without moving the data.

Three signals:

* **Key-count divergence** ``|c1 - c2| / max(c1, c2)`` (0 when both are 0).
* **Sampled value comparison.** Each region publishes a *summary*: its count
  and ``store.sample(n, seed, now)`` -- the ``n`` entries with the smallest
  ``SHA-256("<seed>|<tenant>|<pcs_id>")`` (the dedup contract makes this the
  same on every backend). For two summaries with the same seed, a key whose
  rank is at most the smaller of the two samples' largest ranks is in both
  samples iff it is in both stores, so exactly those keys are comparable. A
  comparable key mismatches if one side lacks it or the sides hold a different
  ``(payload_digest, status)``; ``sample_mismatch = mismatches / comparable``.
* **Explicit conflicts**: the reconciler's open conflict count.

**Scope: only what the CRR policy replicates.** Under selective replication a
tenant's records reach only the regions whose reader selects them, so two
regions may differ by design. Each summary carries the publishing region's
policy as its reader applies it (``reads``: the sources of its
:class:`~flk.impl.replication.reading.Topology`, the one owner of the
"which tenant goes to which region" rule, :meth:`Topology.reads`) and, per
sampled key, its origin region (the stored outcome's ``region``). A comparable
key is compared only if both regions hold keys of its origin and tenant: each
region either is the origin or reads the tenant from it. Keys outside that
scope are counted (``out_of_scope``), never a mismatch. Key counts are
compared only when the two policies put every key of either store in scope
(``count_compared``; a store cannot count per tenant) and neither count includes
the copies a shard migration left in the moved keys' old shards (from its cutover
until its prune: the summary's ``count_exact``, the comparison's
``count_inexact``); otherwise the sample is the signal. A summary without
``reads`` (no policy given) holds and is held to every key, as before.

**Lag is not divergence.** A key a peer has not applied yet is replication lag, not drift:
each sampled key carries its ``first_seen`` (the origin's time), and a comparable key that
only one side holds and that is younger than ``settle_s`` at the older summary's ``taken_at``
is *in flight* (``in_flight``): neither compared nor a mismatch. A key both sides hold with
different values is a mismatch at any age. The key counts are compared alike: the difference
is first reduced by the keys each region took itself (its own writes) in its last ``settle_s``
(``count_slack``: the larger of the two regions' estimates, its count times its sample's share
of such keys; exact when the sample holds the whole store). ``settle_s`` defaults to :func:`default_settle_s` of
the replication periods -- ``2 x (ship + read interval) + 3 s``, what a record takes to be
sealed, uploaded, copied and read twice over -- so a lag within it never raises an alert and
a key missing longer than it does. (Without it, a young run's lag alone raised warnings: with
~4 s of lag 11-27 % of the sampled keys were not applied yet at 10 s into a real run.)

Severity (SPEC thresholds): ``warning`` if count divergence > 5 % or
sample mismatch > 10 % or any open conflict; ``critical`` at twice the
thresholds (> 10 % / > 20 %). Pure functions plus :class:`DivergenceDetector`
(``step(now) -> next_wakeup``) that exchanges summaries through the object
store under ``_divergence/<region>/<period>-<ms>.json`` (the latest one per region).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core import textdata
from ..dedup import StoreUnavailable, sample_rank
from ..storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from .reading import Topology

SEVERITY_LEVEL = {"ok": 0, "warning": 1, "critical": 2}  # an alert's severity as flk_crr_divergence_severity


def severity_level(severities: Iterable[str]) -> int:
    """``flk_crr_divergence_severity``: the worst of ``severities`` (of a detector's ``last``
    alerts), 0 without any."""
    return max((SEVERITY_LEVEL[s] for s in severities), default=0)


COUNT_WARN, SAMPLE_WARN = 0.05, 0.10
SETTLE_MARGIN_S = 3.0  # default_settle_s: beyond twice a record's way through the periods
RUNBOOK = "spec/SPEC.md#11-multi-region-replication-and-convergence"
PREFIX = "_divergence"


def default_settle_s(ship_interval_s: float, read_interval_s: float) -> float:
    """How young a key may be and still be replication lag rather than divergence (the
    detector's ``settle_s`` unless configured): twice a record's way through the replication
    periods -- sealed at the next ship tick, read at the next poll -- plus
    :data:`SETTLE_MARGIN_S` for the uploads and copies."""
    return round(2.0 * (float(ship_interval_s) + float(read_interval_s)) + SETTLE_MARGIN_S, 6)


def settle_time(configured: float | None, ship_interval_s: float, read_interval_s: float) -> float:
    """The detector's ``settle_s``: the configured one, else :func:`default_settle_s` of the periods
    (the server's replication service and the simulator's regions both ask here)."""
    return default_settle_s(ship_interval_s, read_interval_s) if configured is None else float(configured)


Reads = tuple[tuple[str, tuple[str, ...] | None], ...]  # (source, None = every tenant | tenants), sorted


def reads_of(topology: Topology | None) -> Reads | None:
    """A reader topology as a summary's ``reads`` (None: no policy given)."""
    if topology is None:
        return None
    return tuple((src, None if f is None else tuple(sorted(f))) for src, f in sorted(topology.sources.items()))


def topology_of(reads: Reads | None) -> Topology | None:
    """A summary's ``reads`` as the reader's :class:`Topology` again (the rule's one owner)."""
    if reads is None:
        return None
    return Topology({src: None if f is None else frozenset(f) for src, f in reads})


@dataclass(frozen=True)
class Summary:
    region: str
    count: int
    seed: int
    n: int
    taken_at: float
    # (tenant, pcs_id, payload_digest, status, origin region, first_seen: the origin's time)
    sample: tuple[tuple[str, str, str, int, str, float], ...]
    reads: Reads | None = None  # the publishing region's CRR policy as its reader applies it
    count_exact: bool = True  # False: the count includes a shard migration's copies (not compared)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["sample"] = [list(x) for x in self.sample]
        d["reads"] = None if self.reads is None else [[src, None if f is None else list(f)] for src, f in self.reads]
        return json.dumps(d, sort_keys=True).encode()

    @staticmethod
    def from_json(raw: bytes) -> Summary:
        """The summary ``raw`` holds, or :class:`MalformedSummary` for any other bytes (never another
        exception: a peer's object is input). Numbers are checked as well as types: a ``first_seen``
        of NaN or +infinity would keep a key in flight forever and hide a drift, so only finite times
        (or -infinity: an older summary's entry, always compared) are read."""
        try:
            d = textdata.json_loads(raw)
        except (ValueError, TypeError):  # not JSON, not UTF-8, too deep, not bytes
            raise MalformedSummary("not JSON") from None
        if not isinstance(d, dict):
            raise MalformedSummary("not a JSON object")
        sample = d.get("sample")
        if not isinstance(sample, list):
            raise MalformedSummary("sample: not a list")
        reads = d.get("reads")
        exact = d.get("count_exact", True)
        if not isinstance(exact, bool):
            raise MalformedSummary("count_exact: not a boolean")
        return Summary(_text(d.get("region"), "region"), _count(d.get("count"), "count"),
                       _count(d.get("seed"), "seed"), _count(d.get("n"), "n"), _time(d.get("taken_at"), "taken_at"),
                       tuple(_entry(x) for x in sample), None if reads is None else _reads(reads), exact)


class MalformedSummary(ValueError):
    """Bytes under a peer's summary key that are not a summary (corrupt, truncated, another
    program's object): the detector counts that peer unseen for the period and ``unreadable``."""


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise MalformedSummary(f"{what}: not a string")
    return v


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise MalformedSummary(f"{what}: not an integer >= 0")
    return v


def _time(v: Any, what: str, older: bool = False) -> float:
    """A finite time (``older``: -infinity too, the first_seen of an older summary's entry)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) or (older and v == -math.inf)):
        raise MalformedSummary(f"{what}: not a finite number")
    return float(v)


def _entry(x: Any) -> tuple[str, str, str, int, str, float]:
    """A sample entry from JSON; one of an older summary (no origin, no first_seen) is never in flight."""
    if not isinstance(x, list) or not 4 <= len(x) <= 6:
        raise MalformedSummary("sample entry: not a list of 4 to 6 fields")
    t, p, g, st, *rest = x
    if isinstance(st, bool) or not isinstance(st, int):
        raise MalformedSummary("sample entry: status not an integer")
    origin = _text(rest[0], "sample entry origin") if rest else ""
    first_seen = _time(rest[1], "sample entry first_seen", older=True) if len(rest) > 1 else -math.inf
    return _text(t, "sample entry tenant"), _text(p, "sample entry pcs_id"), _text(g, "sample entry digest"), st, \
        origin, first_seen


def _reads(v: Any) -> Reads:
    """A summary's CRR policy: ``[[source, null | [tenant, ...]], ...]``."""
    if not isinstance(v, list):
        raise MalformedSummary("reads: not a list")
    out = []
    for pair in v:
        if not isinstance(pair, list) or len(pair) != 2:
            raise MalformedSummary("reads: an entry is not [source, tenants]")
        src, f = pair
        if f is not None and not isinstance(f, list):
            raise MalformedSummary("reads: tenants not a list")
        out.append((_text(src, "reads source"), None if f is None else tuple(_text(x, "reads tenant") for x in f)))
    return tuple(out)


def summarize(store: Any, region: str, n: int, seed: int, now: float, topology: Topology | None = None) -> Summary:
    """This region's summary; ``topology``: the CRR policy its reader applies (None: none given)."""
    sample = store.sample(n, seed, now)
    return Summary(region, int(store.count(now)), seed, n, now,
                   tuple((t, p, o.payload_digest, int(o.status), o.region, float(o.first_seen)) for t, p, o in sample),
                   reads_of(topology),
                   bool(getattr(store, "count_exact", True)))


def holds(topology: Topology | None, region: str, origin: str, tenant: str) -> bool:
    """``region`` holds ``origin``'s keys of ``tenant`` under its policy: its own writes, or a
    source its reader reads the tenant from (no policy given: every key)."""
    return topology is None or origin == region or topology.reads(origin, tenant)


def replicated(s1: Summary, s2: Summary) -> Callable[[str, str], bool]:
    """``(origin, tenant) -> both regions hold origin's keys of tenant`` (the key is compared)."""
    t1, t2 = topology_of(s1.reads), topology_of(s2.reads)
    return lambda origin, tenant: holds(t1, s1.region, origin, tenant) and holds(t2, s2.region, origin, tenant)


def full_scope(s1: Summary, s2: Summary) -> bool:
    """Every key of either store is in the pair's scope (the two policies agree on every
    origin and tenant), so the key counts are comparable."""
    if s1.reads is None and s2.reads is None:
        return True
    t1, t2 = topology_of(s1.reads), topology_of(s2.reads)
    other_region, other_tenant = "\x00region", "\x00tenant"  # stand for every name no policy mentions
    origins = {s1.region, s2.region, other_region}
    tenants = {other_tenant}
    for t in (t1, t2):
        if t is not None:
            origins.update(t.sources)
            tenants.update(x for f in t.sources.values() if f is not None for x in f)
    return all(holds(t1, s1.region, o, t) == holds(t2, s2.region, o, t) for o in origins for t in tenants)


def count_divergence(c1: int, c2: int, slack: int = 0) -> float:
    """``max(0, |c1 - c2| - slack) / max(c1, c2)`` (0 when both are 0): ``slack`` keys of the
    difference are explained by replication lag (:func:`recent_keys`)."""
    m = max(c1, c2)
    return 0.0 if m == 0 else max(0, abs(c1 - c2) - slack) / m


@dataclass(frozen=True)
class Comparison:
    region1: str
    region2: str
    count1: int
    count2: int
    count_divergence: float
    comparable: int
    mismatched: int
    sample_mismatch: float
    mismatched_keys: tuple[tuple[str, str], ...] = ()
    out_of_scope: int = 0  # comparable keys the policies do not replicate between the two (not compared)
    count_compared: bool = True  # False: the policies leave keys out, or a count is inexact: they say nothing
    count_inexact: tuple[str, ...] = ()  # the regions whose count includes a shard migration's copies
    in_flight: int = 0  # comparable keys one side holds, younger than settle_s: lag, not compared
    count_slack: int = 0  # the count difference the regions' last settle_s of keys explains (not divergence)


def recent_keys(s: Summary, cutoff: float) -> int:
    """The keys ``s``'s region took itself (origin) after ``cutoff`` (first_seen) -- what its
    peers may not hold yet: exact when its sample holds the whole store, else its count times
    the sample's share of them."""
    if not s.sample:
        return 0
    young = sum(1 for e in s.sample if e[5] > cutoff and e[4] == s.region)
    return young if len(s.sample) < s.n else round(s.count * young / len(s.sample))


def compare(s1: Summary, s2: Summary, settle_s: float = 0.0) -> Comparison:
    """The two summaries' divergence over what their CRR policies replicate between them; a key
    younger than ``settle_s`` that one side lacks is lag (in flight), not divergence."""
    if s1.seed != s2.seed:
        raise ValueError("summaries with different seeds are not comparable")
    rank = {}
    origins: dict[tuple[str, str], set[str]] = {}
    born: dict[tuple[str, str], float] = {}
    for t, p, _g, _s, o, f in s1.sample + s2.sample:
        rank[(t, p)] = sample_rank(s1.seed, t, p)
        origins.setdefault((t, p), set()).add(o)
        born[(t, p)] = min(f, born.get((t, p), f))
    cutoff = min(s1.taken_at, s2.taken_at) - settle_s

    def bound(s: Summary) -> str | None:
        # a sample with fewer than n entries holds the whole store: no bound
        if len(s.sample) < s.n:
            return None
        return max(rank[(t, p)] for t, p, *_ in s.sample)

    b1, b2 = bound(s1), bound(s2)
    limit = min([b for b in (b1, b2) if b is not None], default=None)
    v1 = {(t, p): (g, st) for t, p, g, st, *_ in s1.sample}
    v2 = {(t, p): (g, st) for t, p, g, st, *_ in s2.sample}
    comparable = sorted(k for k in set(v1) | set(v2) if limit is None or rank[k] <= limit)
    both = replicated(s1, s2)
    scoped = comparable if s1.reads is None and s2.reads is None else [
        k for k in comparable if any(both(o, k[0]) for o in sorted(origins[k]))]
    keys = scoped if settle_s <= 0 else [k for k in scoped if (k in v1 and k in v2) or born[k] <= cutoff]
    bad = tuple(k for k in keys if v1.get(k) != v2.get(k))
    mm = len(bad) / len(keys) if keys else 0.0
    inexact = tuple(s.region for s in (s1, s2) if not s.count_exact)
    counted = full_scope(s1, s2) and not inexact
    slack = max(recent_keys(s1, cutoff), recent_keys(s2, cutoff)) if settle_s > 0 else 0
    return Comparison(s1.region, s2.region, s1.count, s2.count,
                      count_divergence(s1.count, s2.count, slack) if counted else 0.0,
                      len(keys), len(bad), mm, bad, len(comparable) - len(scoped), counted, inexact,
                      len(scoped) - len(keys), slack if counted else 0)


@dataclass(frozen=True)
class Alert:
    severity: str  # "ok" | "warning" | "critical"
    comparison: Comparison
    open_conflicts: int = 0
    runbook: str = RUNBOOK
    reasons: tuple[str, ...] = field(default=())


def severity(c: Comparison, open_conflicts: int = 0, count_warn: float = COUNT_WARN,
             sample_warn: float = SAMPLE_WARN) -> Alert:
    reasons = []
    level = "ok"
    if c.count_divergence > 2 * count_warn or c.sample_mismatch > 2 * sample_warn:
        level = "critical"
    elif c.count_divergence > count_warn or c.sample_mismatch > sample_warn or open_conflicts > 0:
        level = "warning"
    if c.count_divergence > count_warn:
        reasons.append(f"count divergence {c.count_divergence:.1%}")
    if c.sample_mismatch > sample_warn:
        reasons.append(f"sample mismatch {c.sample_mismatch:.1%} of {c.comparable}")
    if open_conflicts:
        reasons.append(f"{open_conflicts} open conflict(s)")
    return Alert(level, c, open_conflicts, RUNBOOK, tuple(reasons))


def check_all(summaries: Iterable[Summary], open_conflicts: int = 0, settle_s: float = 0.0) -> list[Alert]:
    """Every pair (sorted by region) with equal seeds (``settle_s``: :func:`compare`)."""
    ss = sorted(summaries, key=lambda s: s.region)
    out = []
    for i in range(len(ss)):
        for j in range(i + 1, len(ss)):
            if ss[i].seed == ss[j].seed:
                out.append(severity(compare(ss[i], ss[j], settle_s), open_conflicts))
    return out


class DivergenceDetector:
    """Publishes this region's summary every ``interval_s`` (seed = the check
    period number, so all regions sample the same keys in a period) and, half a
    period later, compares it with the peers' summaries of the same period.

    :meth:`step` is the one call of every driver (``flk serve``'s replication
    thread, the simulator's regions): it runs that schedule. Regions publish at
    about the same moment, so a summary compared at once would meet only the
    peers that happened to publish first; half a period later every peer that is
    up and reachable has published.

    ``unseen``: per peer, the consecutive periods whose comparison lacked that
    peer's summary (it is down, cut off, or its period differs) -- or could not
    run at all (this region's object store or dedup store out). A check that
    compared nothing is not "ok": it is blind, and this says for how long.

    ``unreadable``: per peer, how many of its summaries this region read that were not a summary
    (:class:`MalformedSummary`: corrupt or foreign bytes under its key); such a period counts the
    peer unseen, as if nothing had arrived: its divergence is unknown.

    ``settle_s``: how young a key a peer lacks may be and still be lag (:func:`compare`; the
    drivers pass :func:`default_settle_s` of their replication periods unless configured).

    ``topology()``: the CRR policy this region's reader applies now (the
    driver passes ``lambda: reader.topology``, so a policy changed at run time
    is the one published); None compares every key."""

    def __init__(self, region: str, store: Any, objects: ObjectStore, peers: Iterable[str], n: int = 100,
                 interval_s: float = 300.0, on_alert: Callable[[Alert], None] | None = None,
                 open_conflicts: Callable[[], int] = lambda: 0,
                 topology: Callable[[], Topology] | None = None, settle_s: float = 0.0) -> None:
        self.region, self.store, self.objects = region, store, objects
        self.settle_s = float(settle_s)  # a key younger than this that a peer lacks is lag (compare)
        self.topology = topology
        self.peers = sorted(set(peers) - {region})
        self.n, self.interval_s, self.on_alert, self.open_conflicts = n, float(interval_s), on_alert, open_conflicts
        self.last: list[Alert] = []
        self.failures = 0
        self.mine: Summary | None = None  # the summary this region published last
        self.counted: tuple[int, float] | None = None  # (key count, when): the last summary taken, published or not
        self.unseen: dict[str, int] = dict.fromkeys(self.peers, 0)
        self.unreadable: dict[str, int] = dict.fromkeys(self.peers, 0)  # per peer: summaries read that were not one
        self._unseen_in: dict[str, int] = {}  # peer -> the period last counted unseen (once per period)
        self.compared: list[Alert] | None = None  # what the last step compared (None: it compared nothing)
        self._publish_at = 0.0
        self._compare_at: float | None = None

    def period(self, now: float) -> int:
        return int(now // self.interval_s)

    def step(self, now: float) -> float:
        """Publish at the start of a period (:meth:`publish`); half a period later compare
        (:meth:`compare_again`). Returns when to step again. ``compared`` is the comparison this
        call made, None if it published or could not read the peers' summaries."""
        self.compared = None
        if self._compare_at is not None and now >= self._compare_at:
            self._compare_at = None
            if self.mine is not None and self.mine.seed == self.period(now):
                failures = self.failures
                alerts = self.compare_again(now)
                if self.failures == failures:
                    self.compared = alerts
                return self._publish_at
            # held up past the period its summary was for (a stopped process): publish anew
        self._publish_at = self.publish(now)
        if self.failures == 0:  # published (a failure counts one more)
            self._compare_at = now + self.interval_s / 2
        return min(self._publish_at, self._compare_at if self._compare_at is not None else self._publish_at)

    def publish(self, now: float) -> float:
        """Publish this period's summary (only the latest one per region is kept); returns
        the next period's start (or, with a store out, a retry after a backoff)."""
        seed = self.period(now)
        try:
            mine = summarize(self.store, self.region, self.n, seed, now,
                             None if self.topology is None else self.topology())
            self.counted = (mine.count, now)  # known even if the upload below fails
            key = f"{PREFIX}/{self.region}/{seed:012d}-{int(now * 1000):015d}.json"
            self.objects.put(key, mine.to_json())
            for old in self.objects.list(f"{PREFIX}/{self.region}/"):
                if old != key:
                    self.objects.delete(old)  # only the latest summary is kept
        except (ObjectStoreUnavailable, StoreUnavailable):  # the object store or the dedup store (a shard) is out
            self.failures += 1
            self._count_unseen(self.peers, seed)
            return now + min(self.interval_s, 5.0 * self.failures)
        self.mine = mine
        self.failures = 0
        return (seed + 1) * self.interval_s + min(1.0, self.interval_s / 10)

    def _count_unseen(self, peers: Iterable[str], seed: int) -> None:
        for p in peers:
            if self._unseen_in.get(p) != seed:
                self._unseen_in[p] = seed
                self.unseen[p] += 1

    def _peer_summaries(self, seed: int) -> list[Summary]:
        theirs = []
        for p in self.peers:
            latest = self.objects.list(f"{PREFIX}/{p}/{seed:012d}-")
            if not latest:
                continue
            try:
                theirs.append(Summary.from_json(self.objects.get(latest[-1])))
            except ObjectNotFound:  # replaced by a newer one meanwhile: next period
                continue
            except MalformedSummary:  # not a summary: this peer is unseen this period, and counted
                self.unreadable[p] += 1
        return theirs

    def _alert(self, mine: Summary, theirs: list[Summary]) -> list[Alert]:
        alerts = [a for a in check_all([mine, *theirs], self.open_conflicts(), self.settle_s)
                  if self.region in (a.comparison.region1, a.comparison.region2)]
        self.last = alerts
        if self.on_alert is not None:
            for a in alerts:
                if a.severity != "ok":
                    self.on_alert(a)
        return alerts

    def compare_again(self, now: float) -> list[Alert]:
        """Compare this period's published summary with the peer summaries that
        have arrived (regions publishing at the same moment see each other's
        summaries only after the transfer); a peer whose summary has not arrived
        counts one more period ``unseen``. No summary of this period yet: nothing is compared;
        the store unreachable: nothing is compared and every peer is unseen."""
        if self.mine is None or self.mine.seed != self.period(now):
            return []
        seed = self.mine.seed
        try:
            theirs = self._peer_summaries(seed)
        except ObjectStoreUnavailable:
            self.failures += 1
            self._count_unseen(self.peers, seed)
            return []
        seen = {s.region for s in theirs}
        for p in self.peers:
            if p in seen:
                self.unseen[p] = 0
                self._unseen_in.pop(p, None)
        self._count_unseen([p for p in self.peers if p not in seen], seed)
        return self._alert(self.mine, theirs)
