"""Opt-in tier (``FLK_SIM_TIER=full``): a study's verdict does not hang on its faults' exact times.

Every catalog scenario, each fault's start moved by -0.5, -0.21, +0.29, +0.61 and +0.83 s (one
fault at a time; the others where the scenario puts them), seeds 1-3, keeps every check: its
invariants, SLOs and alert declarations. A claim that held only at the catalog's exact fault times
was luck: such sweeps found FlkCrrReplicationLag firing for one scrape or none (crr-lag-alert's
8 s outage), FlkOverloaded silent only because a crash took the shed counts before any scrape
(agent-crash-outbox), and the breaker closed only because a shard failed during the copy
(dual-write-failure). About 470 runs (some 5 minutes on two cores with ``-n 2``).
"""

from __future__ import annotations

import json
import os

import pytest

from flk.sim import api
from flk.sim.scenario import list_scenarios, load

FULL = os.environ.get("FLK_SIM_TIER") == "full"
SHIFTS_S = (-0.5, -0.21, 0.29, 0.61, 0.83)


def moved(name: str) -> list[str]:
    """One override per (fault with a start, shift): the fault's ``at_s`` moved."""
    out = []
    for i, fault in enumerate(load(name).data.get("faults") or []):
        if "at_s" in fault:
            out += [f"faults.{i}.at_s={round(float(fault['at_s']) + dt, 3)}" for dt in SHIFTS_S
                    if float(fault["at_s"]) + dt > 0]
    return out


def test_every_scenario_with_faults_has_moves_and_they_change_the_run() -> None:
    with_faults = [n for n in list_scenarios() if load(n).data.get("faults")]
    assert len(with_faults) >= 20 and all(moved(n) for n in with_faults)
    one = moved("crr-lag-alert")[0]
    assert api.run("crr-lag-alert", seed=1, overrides=[one], plots=False).digest != \
        api.run("crr-lag-alert", seed=1, plots=False).digest  # a move is a different run


@pytest.mark.skipif(not FULL, reason="full tier: set FLK_SIM_TIER=full (faults moved, seeds 1-3)")
@pytest.mark.parametrize("seed", (1, 2, 3))
@pytest.mark.parametrize("name", list_scenarios())
def test_checks_hold_with_each_fault_moved(name, seed) -> None:
    failed = {}
    for override in moved(name):
        res = api.run(name, seed=seed, overrides=[override], plots=False)
        bad = [c["id"] for c in res.results["invariants"] if not c["ok"]]
        bad += [f"SLO {s['metric']} {s['op']} {s['target']}: {s['value']}" for s in res.results["slos"] if not s["ok"]]
        if bad:
            failed[override] = bad
    assert not failed, json.dumps(failed)[:2000]
