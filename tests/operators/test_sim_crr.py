"""A selective CRRPolicy changed at run time, driven by the same controller in the simulator
(``operator-crr-selective``): full -> only t0 -> full again. INV-CRR-SELECTIVE (no region replays
a deselected tenant's peer records once it applied the generation), INV-CONVERGENCE (the
reselected tenant is backfilled), INV-NO-ACKED-LOSS; the counterfactual (no change: nothing
filtered), a sensitivity sweep (the longer t1 stays deselected, the more records the readers
hold back) and a planted out-of-selection replay caught by the checker. Seeds 1-2 here,
1-20 with FLK_SIM_TIER=full."""

from __future__ import annotations

import os

import pytest

from flk.sim import api
from flk.sim import operator as sim_operator
from flk.sim.scenario import ScenarioError, load

FULL = os.environ.get("FLK_SIM_TIER") == "full"
SEEDS = range(1, 21) if FULL else (1, 2)
NAME = "operator-crr-selective"


def _checks(res) -> dict:
    return {c["id"]: c for c in res.results["invariants"]}


@pytest.mark.parametrize("seed", SEEDS)
def test_selective_crr_changed_at_run_time_filters_then_backfills(seed):
    res = api.run(NAME, seed=seed, plots=False)
    checks = _checks(res)
    assert res.valid, [c for c in res.results["invariants"] if not c["ok"]]
    for inv in ("INV-CRR-SELECTIVE", "INV-CONVERGENCE", "INV-NO-ACKED-LOSS", "INV-FWW", "INV-OP-RESUME"):
        assert checks[inv]["ok"], checks[inv]
    assert checks["INV-CRR-SELECTIVE"]["checked"] > 0 and "not exercised" not in checks["INV-CRR-SELECTIVE"]["note"]
    m = res.results["metrics"]
    assert m["crr_outside_selection"] == 0 and m["crr_filtered_records"] > 0, m
    ev = res.history.events
    trans = [e["transition"] for e in ev if e["type"] == "operator.transition"]
    assert trans.count("Applying->Active") == 3 and trans.count("Active->Applying") == 2, trans
    applies = [e for e in ev if e["type"] == "operator.crr_apply"]
    assert len(applies) == 9, applies  # three generations (full, t0 only, full again) x three regions
    first, deselect, reselect = applies[:3], applies[3:6], applies[6:]
    assert first[0]["generation"] == reselect[0]["generation"] != deselect[0]["generation"]  # digest of the spec
    assert all(f is None for e in first + reselect for f in e["filters"].values())
    assert all(f == ["t0"] for e in deselect for src, f in e["filters"].items() if src != e["region"])
    assert all(len(e["backfill"]) == 2 for e in reselect), reselect  # both peers re-read from index 0
    # while deselected no peer t1 record was replayed; after reselection they were
    t_de = max(e["t_us"] for e in deselect)
    t_re = min(e["t_us"] for e in reselect)
    t1 = [e for e in ev if e["type"] == "operator.crr_replay" and e["tenant"] == "t1"]
    assert not [e for e in t1 if t_de < e["t_us"] < t_re]
    assert sum(e["records"] for e in t1 if e["t_us"] >= t_re) > 0


def test_counterfactual_without_the_change_filters_nothing_and_the_check_says_not_exercised():
    without = api.run(NAME, seed=1, overrides=["policies.0.changes=[]"], plots=False)
    assert without.valid
    assert without.results["metrics"]["crr_filtered_records"] == 0
    assert "not exercised" in _checks(without)["INV-CRR-SELECTIVE"]["note"]
    with_change = api.run(NAME, seed=1, plots=False).results["metrics"]
    assert with_change["crr_filtered_records"] > 0


def test_records_held_back_grow_with_how_long_the_tenant_stays_deselected():
    rows = api.sensitivity(NAME, "policies.0.changes.1.at_s", [5.0, 7.0, 10.0],
                           ["crr_filtered_records", "crr_outside_selection"], seed=1)
    assert api.monotone(rows, "crr_filtered_records"), rows
    assert {r["crr_outside_selection"] for r in rows} == {0}, rows


def test_the_selective_checker_catches_a_planted_out_of_selection_replay():
    apply = {"type": "operator.crr_apply", "region": "eu", "filters": {"eu": None, "us": ["t0"]}, "t_us": 1}
    ok = {"type": "operator.crr_replay", "region": "eu", "src": "us", "tenant": "t0", "records": 3, "t_us": 2}
    bad = {**ok, "tenant": "t1", "records": 2, "t_us": 3}
    before = {**bad, "t_us": 0}  # before the region applied the filter: allowed
    assert sim_operator.outside_selection([before, apply, ok]) == []
    assert [v["records"] for v in sim_operator.outside_selection([apply, ok, bad])] == [2]


def test_a_crr_policy_in_a_scenario_is_checked():
    with pytest.raises(ScenarioError, match=r"policies\.0\.changes\.0\.spec\.tenants: unknown tenant 't7'"):
        load(NAME, ['policies.0.changes.0.spec.tenants=["t7"]'])
    with pytest.raises(ScenarioError, match=r"policies\.0\.spec\.regions: unknown region 'mars'"):
        load(NAME, ['policies.0.spec={mode = "full", regions = ["mars"]}'])
    with pytest.raises(ScenarioError, match=r"policies\.0\.kind: a CRRPolicy needs \[replication\]"):
        load(NAME, ["replication.enabled=false"])
