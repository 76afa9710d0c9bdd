"""A model counterexample replayed on the implementation says who shows the violation.

``flk.impl.lab.modelreplay`` drives the steps of a counterexample through real
regions (verifier generator, inbox WAL on the crashable disk, memory dedup
store, shipper, readers + replay appliers, reconciler). A planted *model* bug
(ship-before-sync) is reported as a model bug: the implementation keeps every
invariant on that trace. A planted *implementation* bug (a replay applier that
trusts peers' signatures) is reported as an implementation bug on the trace of
the model's replay-skips-verify counterexample, which the reference model keeps;
the correct implementation keeps it too.
"""

from __future__ import annotations

import json

from flk.impl.lab.cli import main
from flk.impl.lab.modelreplay import replay_counterexample
from flk.model.checker import check
from flk.model.explore import Scope

SMALL = dict(regions=2, tenants=1, keys=1, payloads=2, crashes=1, partitions=1)


def test_inv_wal_first_model_bug_replayed_on_the_implementation_is_a_model_bug():
    scope = Scope(**SMALL, writes=1, bad=0, plant="ship-before-sync")
    cex = check(scope, symmetry=True).violated["INV-WAL-FIRST"]
    rep = replay_counterexample(scope, cex)
    assert rep["verdict"].startswith("model bug") and rep["impl_violated"] == []
    assert rep["reference_model_note"] is not None  # the reference model cannot ship an unsynced record
    assert rep["answers"]["eu"] == {"#1": 200}  # the request went through the real pipeline


def test_inv_verify_before_dedup_implementation_bug_replayed_from_a_model_trace():
    scope = Scope(**SMALL, writes=1, bad=1, plant="replay-skips-verify")
    cex = check(scope, symmetry=True).violated["INV-VERIFY-BEFORE-DEDUP"]
    assert [s["action"] for s in cex["steps"]] == ["submit eu acme/p1 d1 forged", "sync eu", "ship eu",
                                                   "replay us<-eu"]
    good = replay_counterexample(scope, cex)
    assert good["verdict"].startswith("model bug") and good["answers"]["eu"] == {"#1": 401}
    bad = replay_counterexample(scope, cex, impl_plant="replay-skips-verify")
    assert bad["verdict"].startswith("implementation bug")
    assert {"INV-VERIFY-BEFORE-DEDUP", "INV-TENANT-ISOLATION"} <= set(bad["impl_violated"])
    assert bad["reference_model_violated"] == [] and bad["reference_model_note"] is None


def test_inv_model_check_cli_replay_reports_the_verdict(tmp_path, capsys):
    out = tmp_path / "cex.json"
    rc = main(["check", "model", "--regions", "2", "--tenants", "1", "--writes", "1", "--bad", "1",
               "--plant", "replay-skips-verify", "--symmetry", "on", "--replay",
               "--impl-plant", "replay-skips-verify", "--out", str(out)])
    assert rc == 1
    assert "replay on the implementation: implementation bug" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["replay"]["INV-VERIFY-BEFORE-DEDUP"]["impl_plant"] == "replay-skips-verify"
    assert main(["check", "model", "--impl-plant", "replay-skips-verify"]) == 2  # needs --replay
