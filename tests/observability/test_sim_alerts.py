"""Alerts proved by chaos runs (flk.sim.alerts): Prometheus' rule engine (promtool) evaluates the
shipped rules over the simulator's per-region scrapes, and the runs' ALERT-<name> checks hold.

The small tier (seed 1 of every catalog scenario, tests/sim/test_sim.py) already requires every
ALERT check to pass; these tests pin what that means: crr-normal fires nothing, the lag alert
fires in time *because of* the fault (the counterfactual run without it is silent), a planted
verifier bug silences the signature alert, and scraping never changes a run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from flk.sim import alerts, api
from flk.sim.scenario import load

IN_CI = os.environ.get("CI", "").lower() == "true"


pytestmark = pytest.mark.usefixtures("promtool")  # tests/observability/conftest.py


def alert_checks(res) -> dict[str, dict]:
    return {c["id"]: c for c in res.results["invariants"] if c["id"].startswith("ALERT-")}


def test_crr_normal_fires_nothing() -> None:
    res = api.run("crr-normal", seed=1)
    checks = alert_checks(res)
    assert len(checks) == len(alerts.alert_names()) == 22
    assert all(c["ok"] and c["exercised"] for c in checks.values()), checks
    assert res.results["alerts"]["firing"] == {}
    assert alerts.false_alarms(res.results["alerts"], res.scenario.data["alerts"]) == 0


def test_the_lag_alert_fires_in_time_because_of_the_fault(tmp_path) -> None:
    res = api.run("crr-lag-alert", seed=1, out=tmp_path, plots=False)
    lag = alert_checks(res)["ALERT-FlkCrrReplicationLag"]
    assert lag["ok"] and lag["kind"] == "eventually" and "s after the fault at 4 s" in lag["note"]
    assert res.valid
    # with a margin: it fires for several scrapes in both regions, also with the outage begun 0.29 s
    # later (the 8 s outage it replaced fired for one scrape, and for none when moved so)
    for run in (res, api.run("crr-lag-alert", seed=2, overrides=["faults.0.at_s=4.29"], plots=False)):
        firing = run.results["alerts"]["firing"]["FlkCrrReplicationLag"]
        assert set(firing) == {"eu", "us"} and min(len(ts) for ts in firing.values()) >= 3, firing
    run_dir = tmp_path / "crr-lag-alert" / "1"
    assert (run_dir / "series.om").read_text().endswith("# EOF\n")
    # the same rules over the saved series: promtool reports the same firing (replayable evidence)
    p = subprocess.run([shutil.which("promtool"), "test", "rules", str(run_dir / "alerts.test.yml")],
                       capture_output=True, text=True, timeout=120)
    assert "alertname: FlkCrrReplicationLag" in p.stdout + p.stderr
    # counterfactual: the same study without its fault fires nothing (the alert responds to the fault)
    sc = load("crr-lag-alert")
    sc.data["faults"] = []
    calm = api.run(sc, seed=1)
    assert calm.results["alerts"]["firing"] == {}
    assert not alert_checks(calm)["ALERT-FlkCrrReplicationLag"]["ok"]  # declared to fire: it did not


def test_the_series_are_valid_openmetrics_for_a_tsdb_backfill(tmp_path) -> None:
    res = api.run("dedup-outage", seed=1, out=tmp_path, plots=False)
    om = tmp_path / "dedup-outage" / "1" / "series.om"
    text = om.read_text()
    assert 'flk_store_breaker_state{job="flk",instance="r1"} 2.0' in text  # the open breaker was scraped
    p = subprocess.run([shutil.which("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(om),
                        str(tmp_path / "tsdb")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert alert_checks(res)["ALERT-FlkDedupStoreDown"]["ok"]


def test_a_verifier_that_accepts_bad_signatures_silences_the_signature_alert() -> None:
    short = ["scenario.duration_s=12", "scenario.quiescence_s=3"]
    good = api.run("tamper-heavy", seed=1, overrides=short)
    assert alert_checks(good)["ALERT-FlkSignatureFailureSpike"]["ok"]
    bad = api.run("tamper-heavy", seed=1, overrides=short, plant="accepts-bad-signatures")
    assert not alert_checks(bad)["ALERT-FlkSignatureFailureSpike"]["ok"]
    assert good.results["kpi"]["total"]["containment_rate"] == 1.0
    assert bad.results["kpi"]["total"]["containment_rate"] < 0.5  # the ground truth sees the leak


def test_scraping_never_changes_a_run() -> None:
    sc = load("dedup-outage", ["scenario.duration_s=8", "scenario.quiescence_s=3"])
    with_scraper = api.run(sc, seed=3)
    sc.data["alerts"] = {"fire": [], "silent": []}
    without = api.run(sc, seed=3)
    assert without.scraper is None and with_scraper.scraper is not None
    assert with_scraper.digest == without.digest


def test_promtool_missing_means_not_exercised_never_a_pass() -> None:
    checks = alerts.checks(None, {"fire": [{"alert": "FlkBackendDown"}], "silent": ["FlkHttp5xx"]}, [])
    assert [c.exercised for c in checks] == [False, False]
    assert all("not exercised" in c.note for c in checks)
