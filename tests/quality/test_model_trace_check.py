"""Trace validation catches what the simulator's own checkers miss.

``flk sim run --check-model`` maps a simulator history onto the model's actions
(``flk.sim.tracecheck``): every step enabled, every answer the model's. The
planted core mutant ``RestartReplayTrusts`` makes the start-up WAL replay take a
known tenant's bad signature as verified: the live path answered those requests
401, the restart stores them. The in-sim checkers judge INV-VERIFY-BEFORE-DEDUP
on live dedup calls only and the black-box checker sees only client answers,
so both pass the run; the model does not (the same seed, three verdicts).
"""

from __future__ import annotations

import json

from flk.impl.lab.cli import main
from flk.impl.lab.modelreplay import RestartReplayTrusts
from flk.sim import api

SHORT = ["scenario.duration_s=16", "scenario.quiescence_s=10"]  # crashes at 5 and 12 s, both under load (at 14 s
# the second restart's shed answers met the end of the arrivals: FlkOverloaded held at seed 1)


def test_inv_verify_before_dedup_restart_replay_mutant_missed_in_sim_caught_by_the_model():
    res = api.run("crash-restart", seed=1, overrides=SHORT, plots=False, check_model=True,
                  core_cls=RestartReplayTrusts)
    inv = {c["id"]: c for c in res.results["invariants"]}
    assert inv["INV-VERIFY-BEFORE-DEDUP"]["ok"] and inv["INV-VERIFY-BEFORE-DEDUP"]["exercised"]
    assert all(c["ok"] for c in res.results["invariants"] if c["id"].startswith("INV-"))
    v = res.results["verdicts"]
    row = v["by_invariant"]["INV-VERIFY-BEFORE-DEDUP"]
    assert row == {"in_sim": "ok", "model": "VIOLATED"}
    assert v["black_box"]["valid"]
    assert v["model"]["verdict"] == "not a behaviour"
    first = v["model"]["invariants"]["INV-VERIFY-BEFORE-DEDUP"]["first"]
    assert first["event"] == "srv.replay" and first["simulator"][3] is True  # the replay stored it
    assert not res.valid  # with --check-model the model's verdict counts


def test_inv_verify_before_dedup_the_same_seed_without_the_mutant_is_a_behaviour_of_the_model(tmp_path, capsys):
    rc = main(["sim", "run", "crash-restart", "--check-model", "--out", str(tmp_path), "--no-plots", "--quiet",
               *[a for o in SHORT for a in ("--set", o)]])
    assert rc == 0
    out = capsys.readouterr().out
    assert "model says behaviour" in out
    results = json.loads((tmp_path / "crash-restart" / "1" / "results.json").read_text())
    rows = results["verdicts"]["by_invariant"]
    for name in ("INV-FWW", "INV-NO-ACKED-LOSS", "INV-IDEMPOTENT-REPLAY"):
        assert rows[name] == {"in_sim": "ok", "black_box": "ok", "model": "ok"}, name
    assert rows["INV-WAL-FIRST"]["model"] == "ok" and rows["INV-CONVERGENCE"]["model"] == "n/a"
    assert results["verdicts"]["model"]["steps"] > 1000  # it mapped the run, not nothing
