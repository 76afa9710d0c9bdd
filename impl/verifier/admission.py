"""Admission: an AIMD concurrency limit, a per-store circuit breaker, and the one factory.

:func:`build_admission` is the only place the admission objects are made: the
HTTP server (``flk serve``) and the simulator's regions both call it with
:class:`AdmissionSettings` (whose defaults are the server configuration's), so
a simulated overload exercises the policy the server runs. The per-tenant
token buckets and daily quotas (:class:`Limiter`, asked by the pipeline before
the WAL append) are made by the same factory.

Why this module exists: a server that queues without bound turns overload into
latency for everyone and, eventually, into memory exhaustion. Instead the
server admits at most ``limit`` verifications at once and answers the rest at
once with 429 + ``Retry-After``; and a store that keeps failing is cut off for
a while (503 fast) instead of making every request wait for its timeout.

Both are pure state machines in the h11 style: no clock, no threads, no I/O.
Time (``now``, seconds, non-decreasing) is passed in; the HTTP driver calls
them around each request and each store call.

AIMD limit (theory of operation)
--------------------------------
``limit`` is a float in ``[min_limit, max_limit]``; a request is admitted iff
``inflight < floor(limit)``. When an admitted request completes:

* fast and ok (``latency <= target``): additive increase, ``limit += increase / limit``
  (about ``+increase`` per full window of ``limit`` completions);
* slow (``latency > target``) or overloaded (``ok=False``): multiplicative decrease,
  ``limit = max(min_limit, limit * decrease)``, at most once per ``cooldown``
  seconds so one burst of slow completions does not collapse the limit.

Queue depth is the in-flight count itself (a request waiting for the WAL group
commit or a store thread is in flight), so a deep queue shows up twice: as
rejections when it reaches the limit, and as latency that lowers the limit.

Circuit breaker transitions
---------------------------
==========  ==================================  ===========
state       event                               next state
==========  ==================================  ===========
closed      success                             closed (failures = 0)
closed      failure, failures+1 < threshold     closed
closed      failure, failures+1 >= threshold    open (opened_at = now)
open        allow, now < opened_at + open_s     open (denied: 503 fast)
open        allow, now >= opened_at + open_s    half_open (this call is a probe)
half_open   allow, probes < max_probes          half_open (probe admitted)
half_open   allow, probes >= max_probes         half_open (denied)
half_open   success                             closed
half_open   failure                             open (opened_at = now)
==========  ==================================  ===========
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..dedup.base import StoreUnavailable, answered_part

if TYPE_CHECKING:
    from .tenants import Tenant

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# the AIMD ceiling by default (MAX_INFLIGHT), and the most a limit's fall is measured from when a
# Retry-After is told: the limit climbs by 1/limit per fast answer, so it never nears a ceiling of
# thousands, and measured from MAX_INFLIGHT = 100,000 every refusal read as a total collapse
# (Retry-After 3,125 s: the clients of a healthy region went away for most of an hour)
DEFAULT_MAX_INFLIGHT = 256
DAY_S = 86400.0  # quota days are UTC days
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # for the metrics gauge


@dataclass
class AimdLimiter:
    min_limit: int = 4
    max_limit: int = DEFAULT_MAX_INFLIGHT
    target_latency: float = 0.05
    increase: float = 1.0
    decrease: float = 0.7
    cooldown: float | None = None  # default: target_latency
    limit: float = field(default=-1.0)
    inflight: int = 0
    admitted: int = 0
    rejected: int = 0
    _last_decrease: float = field(default=-math.inf, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        if not 0 < self.decrease < 1 or self.increase <= 0 or self.target_latency <= 0:
            raise ValueError("need 0 < decrease < 1, increase > 0, target_latency > 0")
        if self.limit < 0:
            self.limit = float(max(self.min_limit, min(self.max_limit, 32)))
        if self.cooldown is None:
            self.cooldown = self.target_latency

    def try_acquire(self, now: float) -> bool:
        """Admit one verification (True) or refuse it (False: answer 429)."""
        if self.inflight < math.floor(self.limit):
            self.inflight += 1
            self.admitted += 1
            return True
        self.rejected += 1
        return False

    def release(self, now: float, latency: float, ok: bool = True) -> None:
        """An admitted verification finished after ``latency`` seconds."""
        if self.inflight <= 0:
            raise RuntimeError("release without a matching acquire")
        self.inflight -= 1
        if ok and latency <= self.target_latency:
            self.limit = min(float(self.max_limit), self.limit + self.increase / self.limit)
        elif now - self._last_decrease >= self.cooldown:
            self.limit = max(float(self.min_limit), self.limit * self.decrease)
            self._last_decrease = now

    def retry_after(self) -> int:
        """Seconds a refused client should wait: >= 1, more when the limit has collapsed (its fall
        measured from the ceiling, at most :data:`DEFAULT_MAX_INFLIGHT`: never above
        ``ceil(target_latency * 256 / min_limit)``, 8 s with the server's defaults)."""
        ceiling = min(self.max_limit, DEFAULT_MAX_INFLIGHT)
        return max(1, math.ceil(self.target_latency * ceiling / max(self.limit, 1.0)))


class BreakerOpen(Exception):
    """The store's breaker is open: answer 503 without calling the store."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"store {name} circuit open")
        self.name = name
        self.retry_after = retry_after

    def __reduce__(self):  # pickled as __init__'s arguments (a worker process's error reaches its pool intact)
        return type(self), (self.name, self.retry_after)


@dataclass
class CircuitBreaker:
    name: str = "store"
    failure_threshold: int = 5
    open_s: float = 2.0
    max_probes: int = 1
    state: str = CLOSED
    failures: int = 0
    opened_at: float = -math.inf
    probes: int = 0
    opens: int = 0  # how many times it opened (metric)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.open_s <= 0 or self.max_probes < 1:
            raise ValueError("need failure_threshold >= 1, open_s > 0, max_probes >= 1")

    def allow(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now < self.opened_at + self.open_s:
                return False
            self.state, self.probes = HALF_OPEN, 0
        if self.probes < self.max_probes:
            self.probes += 1
            return True
        return False

    def on_success(self, now: float) -> None:
        if self.state == HALF_OPEN:
            self.state, self.probes = CLOSED, 0
        if self.state == CLOSED:
            self.failures = 0

    def on_failure(self, now: float) -> None:
        if self.state == CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._open(now)
        elif self.state == HALF_OPEN:
            self._open(now)
        # a failure reported while open (a call admitted before it opened) changes nothing

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.probes, self.failures = OPEN, now, 0, 0
        self.opens += 1

    def retry_after(self, now: float) -> int:
        if self.state == OPEN:
            return max(1, math.ceil(self.opened_at + self.open_s - now))
        return 1

    def check(self, now: float) -> None:
        """``allow`` or raise :class:`BreakerOpen`."""
        if not self.allow(now):
            raise BreakerOpen(self.name, self.retry_after(now))


# -- per-tenant token buckets and quotas ----------------------------------------------------------------
@dataclass(frozen=True)
class Admission:
    ok: bool
    retry_after: int = 0  # whole seconds, >= 1 when not ok
    reason: str = ""  # "rate_limited" | "quota_exceeded"


_ADMITTED = Admission(True)


class Limiter:
    """Token bucket + daily quota per tenant. Pure logic: ``now`` is passed in.

    A request is admitted only if both allow it; a refused request consumes
    nothing. Quota days are UTC days (``floor(now / 86400)``)."""

    def __init__(self) -> None:
        self._bucket: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last)
        self._day: dict[str, tuple[int, int]] = {}  # tenant -> (day, used)

    def admit(self, tenant: Tenant, now: float) -> Admission:
        if tenant.daily_quota <= 0 and tenant.rate_per_s <= 0:
            return _ADMITTED  # no bucket, no quota: nothing to count
        tid = tenant.tenant_id
        if tenant.daily_quota > 0:
            day = int(now // DAY_S)
            d, used = self._day.get(tid, (day, 0))
            if d != day:
                used = 0
            if used >= tenant.daily_quota:
                return Admission(False, max(1, math.ceil((day + 1) * DAY_S - now)), "quota_exceeded")
        if tenant.rate_per_s > 0:
            tokens, last = self._bucket.get(tid, (tenant.burst, now))
            tokens = min(tenant.burst, tokens + max(0.0, now - last) * tenant.rate_per_s)
            if tokens < 1.0:
                self._bucket[tid] = (tokens, now)
                return Admission(False, max(1, math.ceil((1.0 - tokens) / tenant.rate_per_s)), "rate_limited")
            self._bucket[tid] = (tokens - 1.0, now)
        if tenant.daily_quota > 0:
            self._day[tid] = (day, used + 1)
        return _ADMITTED


# -- the one factory -----------------------------------------------------------------------
@dataclass(frozen=True)
class AdmissionSettings:
    """The admission parameters; the defaults are the server's (``MAX_INFLIGHT`` ... ``BREAKER_OPEN_S``)."""

    max_inflight: int = DEFAULT_MAX_INFLIGHT  # AIMD upper bound on concurrent verifications
    min_inflight: int = 16  # AIMD lower bound
    target_latency_ms: float = 500.0  # AIMD latency target
    breaker_failures: int = 5  # store failures in a row that open the breaker
    breaker_open_s: float = 2.0  # how long the breaker stays open

    @classmethod
    def from_config(cls, config: Any) -> AdmissionSettings:
        """From any object with these attributes (the server's ``ServerConfig``)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AdmissionSettings:
        """From a mapping (a simulated region's settings); absent keys keep the server's
        defaults, and the AIMD lower bound never exceeds a smaller upper bound."""
        given = {f.name: values[f.name] for f in fields(cls) if f.name in values}
        if "min_inflight" not in given and "max_inflight" in given:
            given["min_inflight"] = min(cls.min_inflight, int(given["max_inflight"]))
        return cls(**given)


@dataclass
class AdmissionControl:
    """One process's admission state: what a restart forgets."""

    limiter: AimdLimiter  # concurrent verifications (429 + Retry-After)
    breaker: CircuitBreaker  # the dedup store (503 fast while open)
    buckets: Limiter  # per-tenant token buckets and daily quotas (429 / quota)


def build_admission(settings: AdmissionSettings = AdmissionSettings()) -> AdmissionControl:
    """The admission objects for one server worker or one simulated region."""
    return AdmissionControl(
        limiter=AimdLimiter(min_limit=settings.min_inflight, max_limit=settings.max_inflight,
                            target_latency=settings.target_latency_ms / 1000.0),
        breaker=CircuitBreaker("dedup", settings.breaker_failures, settings.breaker_open_s),
        buckets=Limiter(),
    )


# -- the dedup store behind the breaker ----------------------------------------------------------------
STORE_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StoreCallTimes:
    """Cumulative histogram of dedup store call times (plain numbers: one batch thread
    observes, a scrape reads); ``buckets[i]`` counts calls <= ``STORE_CALL_BUCKETS[i]``."""

    def __init__(self) -> None:
        self._counts = [0] * (len(STORE_CALL_BUCKETS) + 1)  # per bucket; the last: above every bound
        self.count = 0
        self.total = 0.0

    @property
    def buckets(self) -> list[int]:
        """``buckets[i]``: the calls that took at most ``STORE_CALL_BUCKETS[i]`` seconds."""
        out, running = [], 0
        for n in self._counts[:-1]:
            running += n
            out.append(running)
        return out

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.count += 1
        self.total += seconds
        self._counts[bisect_left(STORE_CALL_BUCKETS, seconds)] += 1  # the first bound >= seconds


class GuardedStore:
    """The dedup store behind the circuit breaker, as the verification core's drivers call
    it (one owner of the breaker wrapping: the server's batch thread and the simulator's
    regions): an open breaker answers ``StoreUnavailable`` at once (no store call), any
    store failure is ``StoreUnavailable`` and counts against the breaker, a short batch is
    a failure. ``clock()`` is the breaker's time (the server's monotonic clock, the
    simulator's SimPy time: a wall-clock step must not open or close it).
    ``batches`` / ``batched_items`` / ``breaker_rejected`` / ``failed_items`` (the items of
    admitted calls that failed: each failed its requests closed) are the /metrics counters;
    ``call_seconds`` counts each admitted call's time from :meth:`admit` to its answer in
    the cumulative buckets of :data:`STORE_CALL_BUCKETS` (``flk_store_call_seconds``).

    A driver that spends time between admitting a call and making it (the simulator's
    store latency) calls :meth:`admit` then :meth:`call`; others call :meth:`get_many` /
    :meth:`put_many_if_absent`, which do both."""

    def __init__(self, store: Any, breaker: CircuitBreaker, clock: Any) -> None:
        self.store = store
        self.breaker = breaker
        self.clock = clock
        self.batches = 0
        self.batched_items = 0
        self.breaker_rejected = 0  # items answered 503 without calling the store
        self.failed_items = 0  # items of admitted calls that failed (a partial outage: the breaker may stay closed)
        self.call_seconds = StoreCallTimes()
        self._admitted_at: float | None = None
        # the fresh-outcome write (flk.impl.dedup.sqlite.SqliteStore.put_many_fresh_if_absent) where the
        # store's class or the store itself defines it (not one a wrapper's __getattr__ forwards)
        if callable(getattr(type(store), "put_many_fresh_if_absent", None)) \
                or "put_many_fresh_if_absent" in getattr(store, "__dict__", ()):
            self.put_many_fresh_if_absent = self._put_many_fresh

    @property
    def unanswered_items(self) -> int:
        """The items the store did not answer, each a request answered 503: those of failed calls
        and those the open breaker refused (``flk_store_failed_items_total``)."""
        return self.failed_items + self.breaker_rejected

    def _put_many_fresh(self, items: list, fresh: tuple, now: float, ttl_s: float | None = None) -> list:
        self.admit(len(items))
        return self.call(self.store.put_many_fresh_if_absent, items, fresh, now, ttl_s)

    def get_many(self, keys: list, now: float) -> list:
        self.admit(len(keys))
        return self.call(self.store.get_many, keys, now)

    def put_many_if_absent(self, items: list, now: float, ttl_s: float | None = None) -> list:
        self.admit(len(items))
        return self.call(self.store.put_many_if_absent, items, now, ttl_s)

    def admit(self, n: int) -> None:
        """Count a batch call of ``n`` items; ``StoreUnavailable`` when the breaker is open."""
        self.batches += 1
        self.batched_items += n
        now = self.clock()  # one reading: the breaker's question and the call's start
        breaker = self.breaker
        if not breaker.allow(now):
            self.breaker_rejected += n
            raise StoreUnavailable(f"dedup store circuit open (retry in {breaker.retry_after(now)} s)")
        self._admitted_at = now

    def call(self, fn: Any, items: list, *args: Any) -> list:
        """Make an admitted call; its success or failure is reported to the breaker. A partial
        answer (:class:`flk.impl.dedup.base.PartialUnavailable` for this call: a shard down) is
        raised to the caller, which answers the other items; the breaker counts it a success:
        the store answered, and the sharded store keeps its down shard out by itself."""
        breaker = self.breaker
        started, self._admitted_at = self._admitted_at, None
        try:
            results = fn(items, *args)
            if results.__class__ is not list:
                results = list(results)
            if len(results) != len(items):
                raise StoreUnavailable("dedup store returned a short batch")
        except Exception as exc:  # noqa: BLE001 -- any store failure fails closed
            now = self.clock()
            if started is not None:
                self.call_seconds.observe(now - started)
            part = answered_part(exc, items)
            if part is not None:  # a shard down: the store answered, its items alone fail (SPEC 13.1)
                self.failed_items += len(part[1])
                breaker.on_success(now)
                raise
            self.failed_items += len(items)
            breaker.on_failure(now)
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"dedup store failed: {type(exc).__name__}") from None
        now = self.clock()  # one reading: the call's end for its time and for the breaker
        if started is not None:
            self.call_seconds.observe(now - started)
        breaker.on_success(now)
        return results
