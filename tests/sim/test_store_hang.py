"""A dedup store outage in two shapes (``store_down`` ``mode``), as a deployed ``flk serve`` meets
them: ``refuse`` -- the store's host refuses connections, each call fails at once; ``hang`` -- the
store's process is frozen (flk cluster: SIGSTOP), each call waits the server's store timeout
(``store_timeout_s``, STORE_TIMEOUT_S) and then fails, unless the store comes back first and
answers it. A region's start pings its store the same way (flk serve exits when the ping fails).

Judged from the history: when the first 503 of the outage is answered, how long the requests
the frozen store held waited, and when the failed starts happen."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.sim import api

START = 4.0  # dedup-outage's store_down at_s


def _outage(mode: str, timeout_s: float, duration_s: float):
    return api.run("dedup-outage", 1, plots=False, overrides=(
        f"faults.0.mode={mode}", f"region_defaults.store_timeout_s={timeout_s}", f"faults.0.duration_s={duration_s}",
        "scenario.duration_s=8", "scenario.quiescence_s=10"))


def _first_503(events) -> float | None:
    return next((e["t_us"] / 1e6 for e in events if e["type"] == "srv.respond" and e["status"] == 503
                 and e["t_us"] >= START * 1e6), None)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timeout_s=st.sampled_from([0.3, 0.8, 1.5, 2.0]), duration_s=st.sampled_from([0.5, 1.2, 2.5, 3.0]))
def test_a_frozen_store_fails_a_call_only_after_the_store_timeout(timeout_s, duration_s):
    r = _outage("hang", timeout_s, duration_s)
    first = _first_503(r.history.events)
    if duration_s <= timeout_s:  # the store came back before any call timed out: every held call answered
        assert first is None
        back = START + duration_s
        held = _answered_at_return(r.history.events, back)
        assert held > 0, "no request waited for the frozen store: nothing exercised"
    else:
        assert first is not None
        assert START + timeout_s - 1e-6 <= first < START + timeout_s + 0.05, (first, timeout_s)
    checks = {c["id"]: c for c in r.results["invariants"]}
    assert checks["INV-NO-ACKED-LOSS"]["ok"] and checks["INV-AT-LEAST-ONCE"]["ok"]


def _answered_at_return(events, back: float) -> int:
    """Requests received before the store froze's return by at least 0.1 s and answered 200/202
    within 50 ms after it: the calls the frozen store held and then answered."""
    recv = {(e["region"], e["d"]): e["t_us"] / 1e6 for e in events if e["type"] == "srv.recv"}
    return sum(1 for e in events if e["type"] == "srv.respond" and e["status"] in (200, 202)
               and back <= e["t_us"] / 1e6 < back + 0.05 and recv.get((e["region"], e["d"]), back) < back - 0.1)


def test_a_refused_store_fails_at_once():
    first = _first_503(_outage("refuse", 2.0, 3.0).history.events)
    assert first is not None and first < START + 0.02


def test_a_start_pings_a_frozen_store_for_the_store_timeout():
    def starts(mode):
        r = api.run("crash-store-down", 1, overrides=(f"faults.0.mode={mode}",), plots=False)
        ev = r.history.events
        return ([e["t_us"] / 1e6 for e in ev if e["type"] == "srv.start_failed"],
                next(e["t_us"] / 1e6 for e in ev if e["type"] == "srv.recovered"))

    # the crash ends at 7 s, the store is back at 12 s; a start boots 0.45 s (start_s) before its
    # ping, and a failed start is retried 1 s later
    refused, up_refused = starts("refuse")
    assert refused == pytest.approx([7.45, 8.9, 10.35, 11.8])  # each ping refused at once
    hung, up_hung = starts("hang")
    assert hung == pytest.approx([9.45])  # the first start waited its 2 s ping and failed
    # the next (10.45 s) boots and pings at 10.9 s: answered when the store thaws at 12 s; the
    # refused side's fifth start (12.8 s) pings at 13.25 s
    assert 12.0 <= up_hung < 12.5 and 13.25 <= up_refused < 13.8
