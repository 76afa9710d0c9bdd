"""Backpressure: an AIMD concurrency limit and a per-store circuit breaker.

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
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # for the metrics gauge


@dataclass
class AimdLimiter:
    min_limit: int = 4
    max_limit: int = 256
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
        """Seconds a refused client should wait: >= 1, more when the limit has collapsed."""
        return max(1, math.ceil(self.target_latency * self.max_limit / max(self.limit, 1.0)))


class BreakerOpen(Exception):
    """The store's breaker is open: answer 503 without calling the store."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"store {name} circuit open")
        self.name = name
        self.retry_after = retry_after


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
