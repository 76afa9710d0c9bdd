"""The shrinker keeps the explorer's liveness rule: every fault heals inside the workload phase.

``flk sim explore --mode liveness`` draws only scenarios whose faults all end before the workload
does (:func:`flk.sim.explore.draw`); the shrinker used to cut ``scenario.duration_s`` down to just
past the last fault's *start*, so a shrunk liveness case could end its workload while a fault was
still on -- no longer a liveness case (an "eventually" failure of it may be the missing heal).
One owner of the rule, :func:`flk.sim.explore.mode_violations`, is what the generator keeps and
what the shrinker's :class:`flk.sim.shrink.Runner` checks before it runs a candidate.

The candidates here are judged by a pure predicate instead of the simulator (the shrinker takes
``run(scenario, seed) -> results``), so every example costs milliseconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flk.sim import explore
from flk.sim.scenario import load
from flk.sim.shrink import Runner, minimize

TARGET = "INV-PLANTED"


def _drawn(seed: int, mode: str) -> dict:
    return load(explore.BASE, explore.draw(seed, mode).overrides).data


def _runner(min_faults: int, min_duration_s: float, keeps) -> Runner:
    """A target that fails while the candidate has ``min_faults`` faults and a workload of at least
    ``min_duration_s`` (a monotone failure, as the passes assume)."""
    def run(sc, _seed):
        d = sc.data
        failing = len(d["faults"]) >= min_faults and float(d["scenario"]["duration_s"]) >= min_duration_s
        return {"invariants": [{"id": TARGET, "ok": not failing, "kind": "always", "violation_count": 1}]}

    return Runner(run, "swarm-liveness", "scenario.toml", 1, TARGET, 400, lambda _m: None, keeps=keeps)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 10**6))
def test_the_generator_draws_only_scenarios_that_keep_their_mode_rule(seed):
    data = _drawn(seed, "liveness")
    assert explore.mode_of(data) == "liveness"
    assert explore.mode_violations(data, "liveness") == []
    assert explore.mode_violations(_drawn(seed, "safety"), "safety") == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 10**6), min_faults=st.integers(1, 3), min_duration=st.floats(0.0, 12.0))
def test_inv_shrink_a_shrunk_liveness_case_still_heals_every_fault_inside_the_workload(seed, min_faults, min_duration):
    data = _drawn(seed, "liveness")
    assume(len([f for f in data["faults"] if "duration_s" in f]) >= min_faults)
    assume(float(data["scenario"]["duration_s"]) >= min_duration)

    def keeps(d):
        return not explore.mode_violations(d, "liveness")

    minimal, _steps, _spent = minimize(_runner(min_faults, min_duration, keeps), data, [])
    assert explore.mode_violations(minimal, "liveness") == [], minimal["faults"]
    assert len(minimal["faults"]) >= min_faults and float(minimal["scenario"]["duration_s"]) >= min_duration


def test_without_the_rule_the_shrinker_cuts_the_workload_before_a_fault_ends():
    """The counterfactual: the same shrink without ``keeps`` yields a case that breaks the rule."""
    seed = next(s for s in range(1, 500) if any("duration_s" in f for f in _drawn(s, "liveness")["faults"]))
    data = _drawn(seed, "liveness")
    minimal, _, _ = minimize(_runner(1, 0.0, None), data, [])
    assert explore.mode_violations(minimal, "liveness"), minimal
    kept, _, _ = minimize(_runner(1, 0.0, lambda d: not explore.mode_violations(d, "liveness")), data, [])
    assert explore.mode_violations(kept, "liveness") == []
    assert float(kept["scenario"]["duration_s"]) > float(minimal["scenario"]["duration_s"])


def test_the_rule_names_what_breaks_it():
    data = {"scenario": {"duration_s": 2.0}, "nemesis": {"enabled": True},
            "faults": [{"kind": "crash", "at_s": 1.5, "duration_s": 0.5}, {"kind": "migrate", "at_s": 1.9},
                       {"kind": "pause", "at_s": 0.5, "duration_s": 1.4}]}
    bad = explore.mode_violations(data, "liveness")
    assert len(bad) == 2 and "fault 0 (crash) ends at 2.0 s" in bad[0] and "nemesis" in bad[1]
    assert explore.mode_violations(data, "safety") == [] and explore.mode_violations(data, None) == []
    assert explore.mode_of({"scenario": {"name": "swarm-safety"}}) == "safety"
    assert explore.mode_of({"scenario": {"name": "crr-normal"}}) is None
