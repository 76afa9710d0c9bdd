"""The simulated router's health check is flk serve's ``GET /ready``, which pings the region's
dedup store: a region whose store is down is not ready, so the router takes it out of rotation
(the deployed router does; the simulator's probe used to look at the process alone and kept
sending a region with a dead store its clients). A refused store fails the probe at once; a
frozen one holds it for the ping's wait, past the probe's 500 ms timeout."""

from __future__ import annotations

import pytest

from flk.sim import api

OUTAGE = (6.0, 14.0)  # eu's store down from 6 s for 8 s


def _routes(mode: str | None) -> list[tuple[float, str]]:
    faults = (f'faults=[{{kind="store_down",at_s={OUTAGE[0]},target="eu",duration_s={OUTAGE[1] - OUTAGE[0]},'
              f'mode="{mode}"}}]') if mode else "faults=[]"
    r = api.run("region-failover", 1, overrides=(faults,), plots=False)
    assert r.results["metrics"]["error_rate"] == 0.0
    return [(e["t_us"] / 1e6, e["type"]) for e in r.history.events if e["type"].startswith("route.")
            and e["region"] == "eu"]


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_a_region_whose_store_is_down_leaves_rotation_and_returns(mode):
    routes = _routes(mode)
    assert [t for _, t in routes] == ["route.down", "route.up"], routes
    (down, _), (up, _) = routes
    # three failed checks one interval apart (1 s; a frozen store's each waits the 500 ms timeout)
    assert OUTAGE[0] + 2.0 <= down <= OUTAGE[0] + 4.0
    assert OUTAGE[1] + 1.0 <= up <= OUTAGE[1] + 3.0  # two passed checks after the store is back


def test_a_frozen_store_is_detected_later_than_a_refused_one():
    (refused, _), _ = _routes("refuse")
    (frozen, _), _ = _routes("hang")
    assert frozen - refused > 1.0  # each of its failed checks waited the probe's timeout


def test_without_the_outage_the_region_stays_in_rotation():
    assert _routes(None) == []
