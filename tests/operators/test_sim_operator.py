"""The operator in the simulator: the catalog's operator scenarios respond to what they
study (the counterfactuals of the two chaos studies run in tests/sim/test_studies.py),
a sensitivity sweep of the fault's size, and the INV-OP-RESUME checker catches a planted
bad path. Seed 1, catalog sizes (seeds 1-20: FLK_SIM_TIER=full)."""

from __future__ import annotations

import pytest

from flk.sim import api
from flk.sim import operator as sim_operator
from flk.sim.scenario import ScenarioError, load


def _transitions(res):
    return [(e["t_us"] / 1e6, e["transition"]) for e in res.history.events if e["type"] == "operator.transition"]


def test_operator_migration_completes_across_controller_kills():
    res = api.run("operator-migration", seed=1, plots=False)
    assert res.valid, [c for c in res.results["invariants"] if not c["ok"]]
    m = res.results["metrics"]
    assert m["operator_completed"] == 1 and m["operator_rollbacks"] == 0 and m["error_rate"] == 0.0
    restarts = [e for e in res.history.events if e["type"] == "operator.restart"]
    assert len(restarts) == 2
    checks = {c["id"]: c for c in res.results["invariants"]}
    assert checks["INV-OP-RESUME"]["ok"] and checks["INV-OP-RESUME"]["checked"] == 8  # Pruning too
    assert checks["INV-NO-ACKED-LOSS"]["ok"] and checks["INV-FWW"]["ok"]


def test_rollbacks_grow_with_the_dedup_latency_fault_and_none_without_it():
    rows = api.sensitivity("operator-migration-rollback", "faults.0.ms", [0, 2, 40],
                           ["operator_rollbacks", "operator_completed", "latency_p95_ms"], seed=1)
    assert [r["operator_rollbacks"] for r in rows] == [0, 0, 1], rows
    assert [r["operator_completed"] for r in rows] == [1, 1, 0], rows
    assert api.monotone(rows, "latency_p95_ms"), rows


def test_a_partition_during_cutover_holds_and_longer_partitions_hold_longer():
    res = api.run("operator-partition-cutover", seed=1, plots=False)
    assert res.valid
    tr = _transitions(res)
    cut = next(t for t, x in tr if x.endswith("->Cutover"))
    cleanup = next(t for t, x in tr if x == "Cutover->Cleanup")
    start = next(e["t_us"] / 1e6 for e in res.history.events if e["type"] == "fault.start")
    assert cut < start < cleanup, (cut, start, cleanup)  # the partition hit the soak in Cutover
    assert all(not x.endswith("RollingBack") for _t, x in tr)
    rows = api.sensitivity("operator-partition-cutover", "faults.0.duration_s", [0.5, 2.5, 4.0],
                           ["operator_done_s", "operator_rollbacks"], seed=1)
    assert api.monotone(rows, "operator_done_s"), rows
    assert {r["operator_rollbacks"] for r in rows} == {0}, rows


def test_the_resume_checker_catches_a_planted_skipped_or_repeated_transition():
    ok = [{"type": "operator.transition", "policy": "ShardMigration/x", "step": f"x#{i}", "transition": t,
           "t_us": i} for i, t in enumerate(["Pending->Planning", "Planning->DualWrite"], 1)]
    skipped = [ok[0], {**ok[1], "transition": "Planning->Cutover"}]
    repeated = [ok[0], {**ok[0], "t_us": 5}]
    for events, want in ((ok, True), (skipped, False), (repeated, False)):
        ev = {"operator.transition": events, "operator.done": [], "operator.restart": []}
        (resume, _done) = sim_operator.checks(events, {"policies": [{}]}, ev)
        assert resume.ok is want, (events, resume)


def test_a_scenario_policy_is_checked_by_the_operator_schema():
    with pytest.raises(ScenarioError, match=r"policies\.0\.spec\.gates\.max_p95: unknown key"):
        load("operator-migration", ["policies.0.spec.gates.max_p95=3"])
    with pytest.raises(ScenarioError, match=r"policies\.0\.spec: the region's rings"):
        load("operator-migration", ["region_defaults.shards=2"])
