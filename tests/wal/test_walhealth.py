"""WalHealth: when a failed inbox WAL is probed again and when it counts as dead."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.core.backoff import Backoff
from flk.impl.storage.walhealth import WalHealth


def test_probes_back_off_and_recovery_resets() -> None:
    h = WalHealth(Backoff(1.0, 8.0), max_probes=100, give_up_after_s=1000.0)
    assert h.available and h.alive and not h.probe_due(0.0)
    h.failed("OSError: ENOSPC", 10.0)
    h.failed("again", 10.5)  # idempotent while failed
    assert h.state == "failed" and h.reason == "OSError: ENOSPC" and h.since == 10.0
    assert not h.probe_due(10.9) and h.probe_due(11.0) and h.retry_after(10.2) == 1
    h.probe_failed("still full", 11.0)
    assert h.next_probe_at == 13.0 and h.retry_after(11.0) == 2
    h.probe_failed("still full", 13.0)
    assert h.next_probe_at == 17.0 and h.status(14.0)["probes"] == 2
    h.recovered(17.0)
    assert h.available and h.recoveries == 1 and h.status(18.0) == {"state": "ok", "recoveries": 1}


def test_dead_after_max_probes_or_after_the_time_bound_and_still_recoverable() -> None:
    h = WalHealth(Backoff(1.0, 1.0), max_probes=3, give_up_after_s=1000.0)
    h.failed("EIO", 0.0)
    for t in (1.0, 2.0):
        h.probe_failed("EIO", t)
        assert h.alive
    h.probe_failed("EIO", 3.0)
    assert not h.alive and h.state == "dead" and h.probe_due(4.0)
    h.recovered(4.0)
    assert h.alive and h.available
    timed = WalHealth(Backoff(1.0, 1.0), max_probes=1000, give_up_after_s=5.0)
    timed.failed("EIO", 0.0)
    timed.probe_failed("EIO", 4.9)
    assert timed.alive
    timed.probe_failed("EIO", 5.0)
    assert not timed.alive


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        WalHealth(max_probes=0)
    with pytest.raises(ValueError):
        WalHealth(give_up_after_s=0)


@given(gaps=st.lists(st.floats(0, 100), max_size=30), max_probes=st.integers(1, 10),
       give_up=st.floats(0.5, 500))
def test_dead_exactly_when_a_bound_is_reached(gaps, max_probes, give_up) -> None:
    h = WalHealth(Backoff(0.5, 4.0), max_probes=max_probes, give_up_after_s=give_up)
    now = 0.0
    h.failed("x", now)
    dead = False
    for k, gap in enumerate(gaps, start=1):
        now += gap
        h.probe_failed("x", now)
        dead = dead or k >= max_probes or now >= give_up  # a bound reached; dead until it recovers
        assert h.alive == (not dead)
        assert h.retry_after(now) >= 1 and h.next_probe_at > now
    assert not h.available
