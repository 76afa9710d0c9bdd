"""Hypothesis properties of the cheap checks (413/429) and of fail-closed store outages (503)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoreUnavailable, open_store
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import (
    Emit,
    Limits,
    Request,
    Verifier,
    WalAppend,
    run_sync,
)

from .pcsgen import HMAC_A, body, make_pcs, registry, sign

NOW = 1_700_000_000.0
GOOD = [body(sign(make_pcs(seed=i), HMAC_A)) for i in range(6)]


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(1, 2000), extra=st.integers(-50, 50), which=st.integers(0, 5))
def test_413_iff_body_over_the_limit_and_never_in_the_wal(limit, extra, which):
    raw = GOOD[which]
    v = Verifier(registry(), limits=Limits(max_body_bytes=max(1, len(raw) + extra)))
    wal = MemoryWal()
    effects = []
    gen = v.handle(Request(raw, "ta"), NOW)
    r = run_sync(gen, wal, open_store("memory"), effects.append)
    if len(raw) > v.limits.max_body_bytes:
        assert r.status == 413 and wal.records == [] and effects[-1]["status"] == 413
    else:
        assert r.status == 200 and len(wal.records) == 1


@settings(max_examples=40, deadline=None)
@given(rate=st.floats(0.5, 20), burst=st.integers(1, 5), gaps=st.lists(st.floats(0, 1), min_size=1, max_size=25))
def test_429_only_over_the_bucket_with_retry_after_and_before_the_wal(rate, burst, gaps):
    v = Verifier(registry(ta={"rate_per_s": rate, "burst": burst}))
    wal, store = MemoryWal(), open_store("memory")
    now, admitted = NOW, 0
    for k, g in enumerate(gaps):
        now += g
        before = len(wal.records)
        r = run_sync(v.handle(Request(GOOD[k % 6], "ta"), now), wal, store)
        if r.status == 429:
            assert int(r.header("Retry-After")) >= 1 and len(wal.records) == before
        else:
            admitted += 1
            assert r.status == 200 and len(wal.records) == before + 1
    assert admitted <= burst + rate * (now - NOW) + 1e-9
    assert admitted >= 1  # the bucket starts full


class FlakyStore:
    """A real memory store behind a switch that makes chosen calls fail like an outage."""

    def __init__(self, fail_calls: set[int]):
        self.inner = open_store("memory")
        self.fail_calls = fail_calls
        self.calls = 0

    def _maybe_fail(self):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise StoreUnavailable("injected outage")

    def get(self, *a):
        self._maybe_fail()
        return self.inner.get(*a)

    def put_if_absent(self, *a):
        self._maybe_fail()
        return self.inner.put_if_absent(*a)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(st.integers(0, 5), min_size=1, max_size=10), fails=st.sets(st.integers(1, 20), max_size=6))
def test_503_fail_closed_then_retry_gives_the_fault_free_answer(reqs, fails):
    v = Verifier(registry())
    flaky, clean = FlakyStore(fails), open_store("memory")
    for i in reqs:
        effects: list = []
        before = flaky.calls
        r = run_sync(_logged(v.handle(Request(GOOD[i], "ta"), NOW), effects), MemoryWal(), flaky)
        injected = any(c in fails for c in range(before + 1, flaky.calls + 1))
        assert (r.status == 503) == injected
        assert isinstance(effects[0], WalAppend)  # recorded before the outage mattered
        if r.status == 503:
            assert r.header("Retry-After") == "1"
            flaky.fail_calls = set()  # heal, retry the same request
            r = run_sync(v.handle(Request(GOOD[i], "ta"), NOW), MemoryWal(), flaky)
            flaky.fail_calls = fails
        want = run_sync(v.handle(Request(GOOD[i], "ta"), NOW), MemoryWal(), clean)
        assert (r.status, r.body) == (want.status, want.body)
    assert flaky.inner.scan(None, 100, NOW) == clean.scan(None, 100, NOW)


def _logged(gen, log):
    reply, exc = None, None
    while True:
        try:
            eff = gen.throw(exc) if exc is not None else gen.send(reply)
        except StopIteration as stop:
            return stop.value
        if not isinstance(eff, Emit):
            log.append(eff)
        try:
            reply, exc = (yield eff), None
        except Exception as e:  # noqa: BLE001
            reply, exc = None, e
