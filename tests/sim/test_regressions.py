"""Failing runs found once stay fixed: every file in sim/scenarios/regressions/ names a
catalog scenario, a seed and overrides that once broke; each must now be valid, and its
``expect`` entries (event type, field filter, min/max count) pin the behaviour it was filed for.

Each case runs through the real command line, ``flk sim run FILE`` (exit 0 = valid, which
includes the REGRESSION-EXPECT check), so ``make test`` runs the regression folder the way a
developer replays it. ``flk sim shrink`` writes new candidates for this folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from flk.sim.history import read_history
from flk.sim.scenario import scenario_dir

CASES = sorted((scenario_dir() / "regressions").glob("*.toml"))
FLK = [sys.executable, "-m", "flk.impl"]


def test_there_are_regression_cases():
    assert CASES


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_regression_case_is_valid_through_flk_sim_run(path, tmp_path):
    case = tomllib.loads(path.read_text())["regression"]
    assert "/" not in case["scenario"] and not case["scenario"].endswith(".toml"), "a shipped case names a catalog scenario"
    done = subprocess.run([*FLK, "sim", "run", str(path), "--out", str(tmp_path), "--no-plots", "--quiet", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr  # 2 would be a case the loader rejects
    results = json.loads(done.stdout)
    bad = [c["id"] for c in results["invariants"] if not c["ok"]] + [
        "SLO " + s["metric"] for s in results["slos"] if not s["ok"]]
    assert done.returncode == 0 and results["valid"], bad
    assert results["seed"] == case["seed"]
    assert "REGRESSION-EXPECT" in {c["id"] for c in results["invariants"]} or not case.get("expect")
    events = read_history(tmp_path / results["scenario"] / str(case["seed"]) / "history.jsonl")
    for exp in case.get("expect", []):  # the pinned counts, also checked here from the written history
        where = exp.get("where", {})
        n = sum(1 for e in events if e["type"] == exp["type"] and all(e.get(k) == v for k, v in where.items()))
        assert exp.get("min", 0) <= n <= exp.get("max", n), (exp, n)
