"""Preflight refuses what a real cluster would leave out unsaid: the operator's policies,
explicit operations, region stores other than the one dedup store of a real region, and a
scenario's own cost model of the simulated store, disk or CPU. Before,
operator-migration passed preflight and a real run would have judged a migration that never ran."""

from __future__ import annotations

import pytest

from flk.impl.lab.cluster.runner import preflight
from flk.sim.scenario import load, scenario_dir

CATALOG = sorted(p.stem for p in scenario_dir().glob("*.toml"))


@pytest.mark.parametrize("name", CATALOG)
def test_every_catalog_scenario_asking_for_what_the_runner_does_not_run_is_refused(name):
    data = load(name).data
    reasons = preflight(data, "redis")
    if data.get("policies"):
        assert any(r.startswith("policies (") for r in reasons), reasons
    if data.get("schedule"):
        assert any(r.startswith("schedule:") for r in reasons), reasons
    if data["region_defaults"]["dedup"] != "memory":
        assert any(r.startswith("region_defaults.dedup") for r in reasons), reasons


def test_the_operator_studies_are_refused_and_plain_ones_are_not():
    for name in ("operator-migration", "operator-partition-cutover", "operator-crr-selective"):
        assert any("operator's controllers" in r for r in preflight(load(name).data, "redis")), name
    for name in ("crr-normal", "key-rotation", "region-failover"):
        assert preflight(load(name).data, "redis") == [], name


def test_a_scenarios_own_cost_model_is_refused_a_fitted_profile_is_not(tmp_path):
    """overload-backpressure slows its simulated store to a 4 ms median: a real store answers in
    a fraction of that, so its real run (2026-11-27) shed nothing (rate_429 0, p95 3.4 ms against
    the simulator's 0.48 and 4.8 s) and judged a region that was never overloaded."""
    reasons = preflight(load("overload-backpressure").data, "redis")
    assert len(reasons) == 1 and reasons[0].startswith("region_defaults.store_ms"), reasons
    for key, value in (("verify_ms", "0.5"), ("fsync_ms", "3.0")):
        got = preflight(load("crr-normal", [f"region_defaults.{key}={value}"]).data, "sqlite")
        assert [r.split(" =")[0] for r in got] == [f"region_defaults.{key}"], got
    profile = tmp_path / "fitted.toml"
    profile.write_text("[region_defaults]\nverify_ms = 0.5\n")
    assert preflight(load("crr-normal", [f"study.profile={profile}"]).data, "sqlite") == []


def test_explicit_operations_and_store_kinds_are_refused():
    import copy

    data = copy.deepcopy(load("crr-normal").data)
    data["schedule"] = [{"at_s": 1.0, "op": "heal"}]
    data["region_defaults"]["dedup"] = "tiered"
    reasons = preflight(data, "sqlite")
    assert any(r.startswith("schedule:") for r in reasons) and any("'tiered'" in r for r in reasons), reasons

