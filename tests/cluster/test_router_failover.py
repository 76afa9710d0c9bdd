"""Failover through the real health-checked router, watched by a real Prometheus.

``[routing] enabled`` on a real cluster starts the shipped router (:mod:`flk.impl.router.proxy`,
launched as :mod:`flk.impl.lab.cluster.router`) in front of the regions. Its rotation rules are
the one table the simulator's router drives too (tests/router/test_health.py checks the rules,
tests/quality/test_one_core.py that both drivers hold that one class); here, on a real cluster, a
SIGKILLed region must leave rotation after the threshold of failed ``/ready`` checks, its agents'
requests must be answered by the other region, and it must come back after its restart. With
``--prometheus`` a real ``prometheus`` scrapes both regions with the shipped rules and the
scenario's ``[alerts]`` declaration is checked against what it reported: FlkBackendDown fires for
the killed region, every other alert stays silent."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from flk.sim import api

from .conftest import FLK, SCENARIOS, in_full_tier, leftovers

FAILOVER = str(SCENARIOS / "cluster-failover.toml")


@pytest.fixture
def prefix():
    """This file's namespace prefix (``flkrt`` + the test process): never one of another run."""
    return f"flkrt{os.getpid() % 0x1000:x}"


def test_region_loss_fails_over_through_the_real_router_and_real_prometheus_fires_backend_down(
        prometheus_ready, prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", FAILOVER, "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--prometheus"], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    checks = {c["id"]: c for c in res["invariants"]}
    assert proc.returncode == 0, [c for c in res["invariants"] if not c["ok"]]
    events = [json.loads(line) for line in (tmp_path / "cluster-failover" / "1" / "history.jsonl").open()]
    crash = next(e for e in events if e["type"] == "fault.start" and e["kind"] == "crash")
    ready = next(e for e in events if e["type"] == "region.ready" and e["t_us"] > crash["t_us"])
    downs = [e for e in events if e["type"] == "route.down"]
    ups = [e for e in events if e["type"] == "route.up"]
    # the router took eu out of rotation after its failed checks, and back after the restart: eu's host
    # is silent (dead_process = silent, the default), so each of the 3 checks waits its 1 s timeout
    # after the 0.5 s interval -- as in the simulator, whose detection this one matches within a second
    assert [e["region"] for e in downs] == ["eu"] and [e["region"] for e in ups] == ["eu"], downs + ups
    assert "silent" in crash["mechanism"]
    assert crash["t_us"] + 2.5e6 <= downs[0]["t_us"] <= crash["t_us"] + 5.5e6, (crash, downs)
    sim = api.run(FAILOVER, 1, plots=False).results["metrics"]["failover_detection_s"]
    assert abs(res["metrics"]["failover_detection_s"] - sim) <= 1.0, (res["metrics"]["failover_detection_s"], sim)
    assert ups[0]["t_us"] >= ready["t_us"]
    # requests of eu's agents went to us while eu was out of rotation (the router chose, not the client)
    home_eu = {e["req"] for e in events if e["type"] == "client.send" and e["attempt"] == 1 and e["agent"] in
               ("agent-0", "agent-2")}
    moved = [e for e in events if e["type"] == "client.recv" and e["req"] in home_eu and e["region"] == "us"
             and downs[0]["t_us"] <= e["t_us"] <= ups[0]["t_us"] and e["status"] in (200, 202)]
    assert moved, "no request of an eu agent was answered by us during the outage"
    m = res["metrics"]
    assert 2.5 <= m["failover_detection_s"] <= 5.5 and 0 < m["rto_s"] <= 9.0, m
    for inv in ("INV-FWW", "INV-NO-ACKED-LOSS", "INV-CONVERGENCE"):
        assert checks[inv]["ok"] and checks[inv]["exercised"], checks[inv]
    # the real Prometheus: eu's scrapes failed -> FlkBackendDown within the declared budget, nothing else fired but the unchecked drift alert
    assert res["alerts"]["engine"] == "prometheus" and min(res["alerts"]["scrapes"].values()) > 10
    fired = checks["ALERT-FlkBackendDown"]
    assert fired["ok"] and fired["exercised"] and "on eu" in fired["note"], fired
    # us's divergence checks ran without eu's summaries: FlkCrrPeerUnseen on us, naming eu
    unseen = checks["ALERT-FlkCrrPeerUnseen"]
    assert unseen["ok"] and unseen["exercised"] and "on us" in unseen["note"], unseen
    # FlkGeoDivergence is declared unchecked (eu misses its peers' writes while down: a true drift)
    assert set(res["alerts"]["firing"]) - {"FlkGeoDivergence"} == {"FlkBackendDown", "FlkCrrPeerUnseen"}, \
        res["alerts"]["firing"]
    assert set(res["alerts"]["firing"]["FlkBackendDown"]) == {"eu"}
    assert set(res["alerts"]["firing"]["FlkCrrPeerUnseen"]) == {"us"}
    assert "ALERT-FlkGeoDivergence" not in checks
    silent = [c for c in res["invariants"] if c["id"].startswith("ALERT-")
              and c["id"] not in ("ALERT-FlkBackendDown", "ALERT-FlkCrrPeerUnseen")]
    assert len(silent) >= 10 and all(c["ok"] and c["note"] == "silent" for c in silent), silent
    assert res["cluster"]["left_behind"] == [] and leftovers(prefix) == []


@in_full_tier
def test_crr_normal_on_a_real_cluster_fires_no_alert(prometheus_ready, prefix, tmp_path):
    proc = subprocess.run([*FLK, "cluster", "run", "crr-normal", "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--prometheus"], capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    alerts = [c for c in res["invariants"] if c["id"].startswith("ALERT-")]
    assert len(alerts) >= 15 and res["alerts"]["firing"] == {}, res["alerts"]["firing"]
    assert all(c["ok"] for c in alerts)


@in_full_tier
@pytest.mark.parametrize("settle", ["default", "0"])
def test_replication_lag_on_a_real_cluster_is_not_divergence(prometheus_ready, prefix, tmp_path, settle):
    """crr-normal with segments shipped every 3 s (real lag p95 about 3 s): the detector's settle
    time keeps FlkGeoDivergence silent; without it (settle 0, the detector before) the lag alone
    pages it on every region about 9 s into the run (measured: 9.27 s, all three)."""
    extra = [] if settle == "default" else ["--set", "replication.divergence_settle_s=0"]
    proc = subprocess.run([*FLK, "cluster", "run", "crr-normal", "--seed", "1", "--out", str(tmp_path), "--json",
                           "--prefix", prefix, "--no-plots", "--prometheus",
                           "--set", "replication.ship_interval_s=3", *extra],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["metrics"]["replication_lag_p95_s"] > 2.0, res["metrics"]
    firing = res["alerts"]["firing"]
    if settle == "default":
        assert firing == {} and res["valid"], firing
    else:
        assert set(firing.get("FlkGeoDivergence", {})) == {"eu", "us", "ap"}, firing
