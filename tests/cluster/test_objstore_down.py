"""crr-lag-alert on a real cluster (full tier: about a minute per run): every region's object
store refuses its processes for 12 s (an nftables reset of the store port in each namespace).
Shipping fails and backs off, the lag grows, no divergence summary travels, and a real
Prometheus fires the three alerts the simulator's study declares, each within its budget; with
the fault moved past the run's end nothing of it fires."""

from __future__ import annotations

from .conftest import cluster_run, in_full_tier

DECLARED = {"FlkCrrReplicationLag", "FlkCrrShippingFailing", "FlkCrrPeerUnseen"}


@in_full_tier
def test_a_refused_real_object_store_fires_the_replication_alerts(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "crr-lag-alert")
    checks = {c["id"]: c for c in res["invariants"]}
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]]
    for name in DECLARED:
        assert checks[f"ALERT-{name}"]["ok"] and set(res["alerts"]["firing"][name]) == {"eu", "us"}, checks
    assert checks["SOMETIMES-LAG-GREW"]["ok"] and res["metrics"]["replication_lag_max_s"] > 12.0
    start = next(e for e in events if e["type"] == "fault.start")
    assert start["kind"] == "objstore_down" and start["target"] == "eu,us" and "reject" in start["mechanism"]
    # each region's key count comes from its own divergence summaries (not the reconciler's keys): the
    # regions' own writes, unshipped, set them apart during the outage
    assert res["metrics"]["divergence_max"] > 0


@in_full_tier
def test_without_the_outage_the_real_replication_alerts_stay_silent(prometheus_ready, prefix, tmp_path):
    res, events = cluster_run(tmp_path, prefix, "crr-lag-alert", "--set", "faults.0.at_s=100")  # after the run's 36 s: never applied
    assert not any(e["type"] == "fault.start" for e in events)
    assert not DECLARED & set(res["alerts"]["firing"]), res["alerts"]["firing"]
    assert res["metrics"]["replication_lag_max_s"] < 5.0
