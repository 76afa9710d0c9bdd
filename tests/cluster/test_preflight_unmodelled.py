"""Preflight refuses what a real cluster would leave out unsaid: the operator's policies,
explicit operations and region stores other than the one dedup store of a real region. Before,
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
    for name in ("overload-backpressure", "crr-normal", "key-rotation"):
        assert preflight(load(name).data, "redis") == [], name


def test_explicit_operations_and_store_kinds_are_refused():
    import copy

    data = copy.deepcopy(load("crr-normal").data)
    data["schedule"] = [{"at_s": 1.0, "op": "heal"}]
    data["region_defaults"]["dedup"] = "tiered"
    reasons = preflight(data, "sqlite")
    assert any(r.startswith("schedule:") for r in reasons) and any("'tiered'" in r for r in reasons), reasons
