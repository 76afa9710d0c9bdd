"""Failing runs found once stay fixed: every file in sim/scenarios/regressions/ names a
catalog scenario, a seed and overrides that once broke; each must now be valid, and its
``expect`` entries (event type, field filter, min/max count) pin the behaviour it was filed for."""

from __future__ import annotations

import tomllib

import pytest

from flk.sim import api
from flk.sim.scenario import scenario_dir

CASES = sorted((scenario_dir() / "regressions").glob("*.toml"))


def test_there_are_regression_cases():
    assert CASES


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_regression_case_is_valid(path):
    case = tomllib.loads(path.read_text())["regression"]
    res = api.run(case["scenario"], seed=case["seed"], overrides=case.get("overrides", []))
    bad = [c["id"] for c in res.results["invariants"] if not c["ok"]] + [
        "SLO " + s["metric"] for s in res.results["slos"] if not s["ok"]]
    assert res.valid, bad
    for exp in case.get("expect", []):
        where = exp.get("where", {})
        n = sum(1 for e in res.history.events
                if e["type"] == exp["type"] and all(e.get(k) == v for k, v in where.items()))
        assert exp.get("min", 0) <= n <= exp.get("max", n), (exp, n)
