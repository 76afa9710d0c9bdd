"""crr-ship-stopped on a real cluster (full tier: about a minute per run): eu's real shipper is
held (``DATA_DIR/crr.pause-ship``) for 20 s while both regions keep writing. The real regions'
divergence checks flag eu's keys once they pass the settle time and a real Prometheus pages
FlkGeoDivergence on both regions, as the simulator's study claims; with the fault moved past
the run's end (the counterfactual) nothing is flagged and nothing pages."""

from __future__ import annotations

from .conftest import cluster_run, in_full_tier

FAULT_AT_S, SETTLE_S = 4.0, 6.0  # the scenario's stop, and its settle time (2 x (1 + 0.5) + 3)


@in_full_tier
def test_a_held_real_shipper_pages_geo_divergence_after_the_settle_time(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "crr-ship-stopped")
    checks = {c["id"]: c for c in res["invariants"]}
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]]
    assert checks["SOMETIMES-LAG-GREW"]["ok"], checks["SOMETIMES-LAG-GREW"]
    firing = res["alerts"]["firing"]
    assert set(firing.get("FlkGeoDivergence", {})) == {"eu", "us"}, firing
    assert set(firing.get("FlkCrrReplicationLag", {})) == {"eu"}, firing  # the held shipper's lag, eu only
    flagged = [e for e in events if e["type"] == "crr.divergence" and e["worst"] != "ok"]
    assert res["metrics"]["divergence_flagged"] == len(flagged) > 0
    # lag is not divergence: no check flags before eu's unshipped keys are older than the settle time
    assert min(e["t_us"] for e in flagged) / 1e6 >= FAULT_AT_S + SETTLE_S, flagged[:2]
    assert {e["region"] for e in flagged} == {"eu", "us"}
    start = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "ship_stop")
    assert start["mechanism"] == "crr.pause-ship"


@in_full_tier
def test_without_the_held_shipper_the_real_regions_flag_nothing(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "crr-ship-stopped", "--set", "faults.0.at_s=100")  # after the run's 45 s: never applied
    assert not any(e["type"] == "fault.start" for e in events)
    assert res["alerts"]["firing"] == {}
    assert res["metrics"]["divergence_flagged"] == 0 and res["metrics"]["replication_lag_max_s"] < 5.0
