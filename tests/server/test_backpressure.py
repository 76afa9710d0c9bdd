"""State-machine tests of the AIMD limit and the circuit breaker (pure, time passed in)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flk.impl.verifier.admission import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AimdLimiter,
    BreakerOpen,
    CircuitBreaker,
)


class AimdMachine(RuleBasedStateMachine):
    """The limiter against a ledger of admitted requests."""

    def __init__(self) -> None:
        super().__init__()
        self.lim = AimdLimiter(min_limit=2, max_limit=40, target_latency=0.05)
        self.now = 0.0
        self.open_requests = 0

    @rule(dt=st.floats(0, 0.2))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def acquire(self) -> None:
        before_limit = math.floor(self.lim.limit)
        ok = self.lim.try_acquire(self.now)
        assert ok == (self.open_requests < before_limit)
        if ok:
            self.open_requests += 1

    @precondition(lambda self: self.open_requests > 0)
    @rule(latency=st.floats(0, 0.2), ok=st.booleans())
    def release(self, latency: float, ok: bool) -> None:
        before = self.lim.limit
        self.lim.release(self.now, latency, ok)
        self.open_requests -= 1
        if ok and latency <= self.lim.target_latency:
            assert self.lim.limit >= before  # additive increase never lowers it
        else:
            assert self.lim.limit <= before  # congestion never raises it

    @invariant()
    def bounds(self) -> None:
        assert self.lim.min_limit <= self.lim.limit <= self.lim.max_limit
        assert self.lim.inflight == self.open_requests >= 0
        assert self.lim.inflight <= self.lim.max_limit
        assert self.lim.retry_after() >= 1


TestAimdMachine = AimdMachine.TestCase
TestAimdMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_aimd_grows_under_fast_completions_and_backs_off_when_slow() -> None:
    lim = AimdLimiter(min_limit=4, max_limit=64, target_latency=0.01)
    start = lim.limit
    now = 0.0
    for _ in range(3000):
        assert lim.try_acquire(now)
        now += 0.001
        lim.release(now, 0.001)
    assert lim.limit == 64.0 > start
    assert lim.try_acquire(now)
    lim.release(now + 1, 0.5)  # one slow completion: multiplicative decrease
    assert lim.limit == pytest.approx(64 * 0.7)
    lim.try_acquire(now + 1)
    lim.release(now + 1.001, 0.5)  # within the cooldown: no second cut
    assert lim.limit == pytest.approx(64 * 0.7)


def test_aimd_refuses_beyond_the_limit_instead_of_queueing() -> None:
    lim = AimdLimiter(min_limit=3, max_limit=3, target_latency=0.01)
    assert [lim.try_acquire(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert lim.rejected == 2
    lim.release(0.0, 0.0)
    assert lim.try_acquire(0.0)
    with pytest.raises(RuntimeError):
        AimdLimiter(min_limit=1, max_limit=1).release(0.0, 0.0)


@given(max_limit=st.integers(1, 100_000), min_limit=st.integers(1, 100_000), target_ms=st.integers(1, 5000),
       collapse=st.floats(0, 1))
def test_retry_after_is_bounded_whatever_the_ceiling(max_limit, min_limit, target_ms, collapse) -> None:
    """A refused client waits at most ceil(target * 256 / min_limit) s however high MAX_INFLIGHT is
    (100,000 told it 3,125 s: the limit never climbs near such a ceiling, so every refusal read as
    a total collapse); up to 256 the wait is what it was, target * ceiling / limit."""
    min_limit = min(min_limit, max_limit)
    lim = AimdLimiter(min_limit=min_limit, max_limit=max_limit, target_latency=target_ms / 1000)
    lim.limit = min_limit + collapse * (max_limit - min_limit)
    told = lim.retry_after()
    assert 1 <= told <= max(1, math.ceil(target_ms / 1000 * 256 / min_limit))
    if max_limit <= 256:
        assert told == max(1, math.ceil(target_ms / 1000 * max_limit / max(lim.limit, 1.0)))


def test_the_server_defaults_with_a_high_max_inflight_tell_at_most_8_s() -> None:
    from flk.impl.verifier.admission import AdmissionSettings, build_admission

    for ceiling, told in ((256, 8), (100_000, 8)):
        lim = build_admission(AdmissionSettings(max_inflight=ceiling)).limiter
        lim.limit = float(lim.min_limit)  # collapsed to its floor
        assert lim.retry_after() == told, ceiling


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a tiny reference model of its transition table."""

    def __init__(self) -> None:
        super().__init__()
        self.b = CircuitBreaker(name="s", failure_threshold=3, open_s=1.0, max_probes=1)
        self.now = 0.0
        self.m_state, self.m_failures, self.m_opened, self.m_probes = CLOSED, 0, -math.inf, 0
        self.admitted_since_open = 0

    @rule(dt=st.floats(0, 1.5))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def allow(self) -> None:
        got = self.b.allow(self.now)
        if self.m_state == CLOSED:
            want = True
        else:
            if self.m_state == OPEN and self.now >= self.m_opened + 1.0:
                self.m_state, self.m_probes = HALF_OPEN, 0
            want = self.m_state == HALF_OPEN and self.m_probes < 1
            if want:
                self.m_probes += 1
        assert got == want
        if self.m_state == OPEN:
            assert self.now < self.m_opened + 1.0  # open denies only inside the window

    @rule()
    def success(self) -> None:
        self.b.on_success(self.now)
        if self.m_state == HALF_OPEN:
            self.m_state, self.m_probes = CLOSED, 0
        if self.m_state == CLOSED:
            self.m_failures = 0

    @rule()
    def failure(self) -> None:
        self.b.on_failure(self.now)
        if self.m_state == CLOSED:
            self.m_failures += 1
            if self.m_failures >= 3:
                self.m_state, self.m_opened, self.m_failures = OPEN, self.now, 0
        elif self.m_state == HALF_OPEN:
            self.m_state, self.m_opened, self.m_failures = OPEN, self.now, 0

    @invariant()
    def agrees(self) -> None:
        assert self.b.state == self.m_state
        assert self.b.failures == self.m_failures
        assert self.b.failures < self.b.failure_threshold
        if self.b.state == OPEN:
            assert self.b.retry_after(self.now) >= 1


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@given(threshold=st.integers(1, 6), open_s=st.floats(0.01, 5))
@settings(max_examples=40, deadline=None)
def test_breaker_opens_after_threshold_then_probes_once_and_closes(threshold: int, open_s: float) -> None:
    b = CircuitBreaker(failure_threshold=threshold, open_s=open_s)
    for i in range(threshold):
        assert b.allow(0.0)
        b.on_failure(0.0)
        assert b.state == (OPEN if i == threshold - 1 else CLOSED)
    with pytest.raises(BreakerOpen) as exc:
        b.check(open_s / 2)
    assert exc.value.retry_after >= 1
    assert b.allow(open_s)  # the half-open probe
    assert b.state == HALF_OPEN
    assert not b.allow(open_s)  # only one probe at a time
    b.on_success(open_s)
    assert b.state == CLOSED and b.allow(open_s) and b.opens == 1
