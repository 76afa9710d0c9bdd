"""A model counterexample replayed on the implementation and on the simulator says who is wrong.

``flk.impl.lab.modelreplay.replay_counterexample`` carries a counterexample's steps
out twice: lockstep on real regions driven through the verification core
(``VerifyBatch``, the only production decision path), and on the simulator as a
scenario whose ``[[schedule]]`` / ``[[faults]]`` tables are the steps at explicit
times (validated by the one scenario schema), judged by the in-sim checkers, the
black-box history checker and the model's trace check. A planted *model* bug
is reported as a model bug by both; a planted *implementation* bug, on a trace
the reference model keeps, as an implementation bug by both; the same trace on
the correct implementation is clean in both.
"""

from __future__ import annotations

import json
import tomllib

from flk.impl.lab.modelreplay import replay_counterexample, schedule_scenario
from flk.model.checker import check
from flk.model.explore import Scope
from flk.sim.scenario import ScenarioError, validate

SMALL = dict(regions=2, tenants=1, keys=1, payloads=2, crashes=1, partitions=1)


def _cex(plant: str, inv: str, bad: int):
    scope = Scope(**SMALL, writes=1, bad=bad, plant=plant)
    return scope, check(scope, symmetry=True).violated[inv]


def test_inv_wal_first_planted_model_bug_is_a_model_bug_on_both_drivers():
    scope, cex = _cex("ship-before-sync", "INV-WAL-FIRST", 0)
    assert [s["action"] for s in cex["steps"]] == ["submit eu acme/p1 d1 good", "ship eu"]
    rep = replay_counterexample(scope, cex)
    assert rep["verdict"].startswith("model bug") and rep["impl_violated"] == []
    sim = rep["simulator"]
    assert sim["verdict"].startswith("model bug") and sim["violated"] == []
    assert sim["model_trace"]["verdict"] == "behaviour" and sim["model_trace"]["steps"] >= 3
    assert list(sim["answers"].values()) == [200]  # the scheduled submit went through the simulated region
    data = tomllib.loads(sim["scenario_toml"])
    assert [(o["op"], o["region"]) for o in data["schedule"]] == [("submit", "eu"), ("ship", "eu")]


def test_inv_verify_before_dedup_planted_implementation_bug_is_an_implementation_bug_on_both_drivers():
    scope, cex = _cex("replay-skips-verify", "INV-VERIFY-BEFORE-DEDUP", 1)
    good = replay_counterexample(scope, cex)
    assert good["verdict"].startswith("model bug") and good["simulator"]["verdict"].startswith("model bug")
    assert list(good["simulator"]["answers"].values()) == [401]
    bad = replay_counterexample(scope, cex, impl_plant="verify-trusts-tenant")
    assert bad["reference_model_violated"] == [] and bad["reference_model_note"] is None
    assert bad["verdict"].startswith("implementation bug")
    assert "INV-VERIFY-BEFORE-DEDUP" in bad["impl_violated"]
    sim = bad["simulator"]
    assert sim["verdict"].startswith("implementation bug") and "INV-VERIFY-BEFORE-DEDUP" in sim["violated"]
    assert sim["by_invariant"]["INV-VERIFY-BEFORE-DEDUP"]["model"] == "VIOLATED"  # the trace check sees it too
    assert list(sim["answers"].values()) == [200]  # the forged request was accepted


def test_inv_no_acked_loss_crash_before_fsync_is_placed_inside_the_step():
    """A crash the model takes between a submit and its sync lands between the simulated
    append and its fsync: the record is lost, the client never answered, no violation."""
    scope = Scope(**SMALL, writes=1, bad=0)
    labels = ["submit eu acme/p1 d1 good", "crash eu", "restart eu"]
    raw, notes = schedule_scenario(scope, labels)
    assert raw["faults"][0] == {"kind": "crash", "at_s": 0.253, "target": "eu"}
    assert "before the fsync" in notes[0]
    rep = replay_counterexample(scope, {"steps": [{"action": a} for a in labels], "kind": "safety",
                                        "invariant": "INV-NO-ACKED-LOSS"})
    assert rep["simulator"]["answers"] == {} and rep["simulator"]["violated"] == []
    assert rep["simulator"]["not_in_the_model"] == ["INV-AT-LEAST-ONCE"]  # one attempt: the client gave up
    assert rep["simulator"]["model_trace"]["verdict"] == "behaviour"


def test_schedule_tables_are_checked_by_the_scenario_schema():
    raw, _ = schedule_scenario(Scope(**SMALL, writes=1, bad=0), ["submit eu acme/p1 d1 good", "ship eu"])
    from flk.sim.scenario import DEFAULTS

    def data_with(item):
        data = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in DEFAULTS.items()}
        for k, v in raw.items():
            data[k] = {**data[k], **v} if isinstance(v, dict) else v
        data["schedule"] = [item]
        return data

    validate(data_with({"at_s": 0.1, "op": "submit", "region": "eu"}))
    for item, key in (({"at_s": 0.1, "op": "deliver", "region": "eu"}, "schedule.0.op"),
                      ({"at_s": 0.1, "op": "submit", "region": "mars"}, "schedule.0.region"),
                      ({"at_s": 0.1, "op": "ship", "region": "eu", "pcs": 2}, "schedule.0.pcs"),
                      ({"at_s": 0.1, "op": "submit", "region": "eu", "tenant": "t9"}, "schedule.0.tenant"),
                      ({"at_s": -1, "op": "submit", "region": "eu"}, "schedule.0.at_s"),
                      ({"at_s": 0.1, "op": "submit", "region": "eu", "signature": "maybe"}, "schedule.0.signature")):
        try:
            validate(data_with(item))
        except ScenarioError as exc:
            assert exc.key == key, (item, exc)
        else:
            raise AssertionError(f"accepted {item}")


def test_inv_verify_before_dedup_check_model_cli_prints_both_replay_verdicts(tmp_path, capsys):
    from flk.impl.lab.cli import main

    out = tmp_path / "cex.json"
    rc = main(["check", "model", "--regions", "2", "--tenants", "1", "--writes", "1", "--bad", "1",
               "--plant", "replay-skips-verify", "--symmetry", "on", "--replay",
               "--impl-plant", "verify-trusts-tenant", "--out", str(out)])
    assert rc == 1
    text = capsys.readouterr().out
    assert "replay on the implementation: implementation bug" in text
    assert "replay on the simulator (explicit schedule): implementation bug" in text
    sim = json.loads(out.read_text())["replay"]["INV-VERIFY-BEFORE-DEDUP"]["simulator"]
    assert "INV-VERIFY-BEFORE-DEDUP" in sim["violated"]
    assert tomllib.loads(sim["scenario_toml"])["schedule"][0]["signature"] == "forged"
