"""Explicit schedules on the simulator, judged by the model's trace check.

Property: for any schedule of submissions (any pcs_id, payload, signature),
ships, reads, crashes and restarts, the correct implementation's history is a
behaviour of the model -- the trace check raises no false alarm -- and the
in-sim checkers agree. And a model trace whose restart replays a forged record
is an implementation bug on both drivers when the core's start-up replay trusts
bad signatures (``restart-replay-trusts``), which only the model's trace check
sees on the simulator.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.lab.modelreplay import replay_counterexample
from flk.model.explore import Scope
from flk.sim import api
from flk.sim.scenario import DEFAULTS, Scenario, validate
from flk.sim.tracecheck import check_trace

REGIONS = ("eu", "us")


def _scenario(schedule: list[dict], faults: list[dict]) -> Scenario:
    data = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in DEFAULTS.items()}
    data["scenario"] |= {"name": "hypothesis-schedule", "duration_s": 3.0, "quiescence_s": 6.0}
    data["region_defaults"] |= {"group_commit_ms": 0.0, "fsync_ms": 5.0, "store_ms": 5.0}
    data["network"] |= {"latency_ms": 1.0, "region_latency_ms": 1.0}
    data["workload"] |= {"agents": 1, "rate_per_s": 0.0, "tenants": 2, "max_attempts": 1}
    data["replication"] |= {"enabled": True, "ship_interval_s": 3.0, "read_interval_s": 3.0, "upload_ms": 5.0,
                            "copy_retry_s": 0.01}
    data["regions"] = [{"id": r} for r in REGIONS]
    data["schedule"], data["faults"] = schedule, faults
    validate(data)
    return Scenario("hypothesis-schedule", "", data)


submit = st.fixed_dictionaries({"op": st.just("submit"), "region": st.sampled_from(REGIONS),
                                "tenant": st.sampled_from(("t0", "t1")), "pcs": st.integers(1, 2),
                                "payload": st.integers(1, 2),
                                "signature": st.sampled_from(("good", "good", "forged", "other"))})
other = st.fixed_dictionaries({"op": st.sampled_from(("ship", "read")), "region": st.sampled_from(REGIONS)})
ops = st.lists(st.one_of(submit, submit, other), min_size=1, max_size=8)
crash_at = st.one_of(st.none(), st.tuples(st.sampled_from(REGIONS), st.integers(1, 8), st.integers(0, 12)))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, crash=crash_at)
def test_inv_any_explicit_schedule_of_the_correct_implementation_is_a_behaviour_of_the_model(ops, crash):
    schedule = [dict(op, at_s=round(0.25 * (i + 1), 6)) for i, op in enumerate(ops)]
    faults = []
    if crash is not None:  # crash at a step, anywhere in its 25 ms after the step, restart a step later
        region, step, ms = crash
        faults = [{"kind": "crash", "at_s": round(0.25 * step + ms / 1000, 6), "target": region},
                  {"kind": "restart", "at_s": round(0.25 * (step + 1) + 0.1, 6), "target": region}]
    res = api.run(_scenario(schedule, faults), seed=1, plots=False)
    rep = check_trace(res.history.events, res.scenario.data)
    assert rep.verdict == "behaviour", rep.violations[:3]
    assert rep.steps >= sum(1 for o in ops if o["op"] == "submit" and crash is None)
    broken = {c["id"] for c in res.results["invariants"] if not c["ok"] and c["id"].startswith("INV-")}
    assert broken <= {"INV-AT-LEAST-ONCE"}, broken  # one attempt per request: a crash may leave one unanswered


def test_inv_verify_before_dedup_restart_replay_mutant_is_an_implementation_bug_on_both_drivers():
    scope = Scope(regions=2, tenants=1, keys=1, payloads=2, writes=1, bad=1, crashes=1, partitions=1)
    labels = ["submit eu acme/p1 d1 forged", "sync eu", "process eu", "crash eu", "restart eu"]
    cex = {"steps": [{"action": a} for a in labels], "kind": "safety", "invariant": "INV-VERIFY-BEFORE-DEDUP"}
    good = replay_counterexample(scope, cex)
    assert good["impl_violated"] == [] and good["simulator"]["violated"] == []
    bad = replay_counterexample(scope, cex, impl_plant="restart-replay-trusts")
    assert bad["verdict"].startswith("implementation bug") and "INV-VERIFY-BEFORE-DEDUP" in bad["impl_violated"]
    sim = bad["simulator"]
    assert sim["verdict"].startswith("implementation bug")
    assert sim["by_invariant"]["INV-VERIFY-BEFORE-DEDUP"] == {"in_sim": "ok", "model": "VIOLATED"}
    assert list(sim["answers"].values()) == [401]  # the live path refused it; the restart stored it


def test_inv_a_run_the_model_cannot_map_is_unknown_not_a_pass():
    """A store outage answers 503 after the WAL append: the model has no such step, so the
    region is no longer judged and the verdict is ``unknown`` (never a silent pass)."""
    res = api.run("dedup-outage", seed=1, overrides=["scenario.duration_s=6", "scenario.quiescence_s=3"],
                  plots=False)
    rep = check_trace(res.history.events, res.scenario.data)
    assert rep.verdict == "unknown" and rep.violations == []
    assert rep.unmapped == ["503 answers (store or WAL outage)"] and rep.steps > 100
    assert rep.by_invariant()["INV-CONVERGENCE"]["note"].startswith("not exercised")


def test_inv_idempotent_replay_a_checkpoint_above_an_unstored_record_is_caught_by_the_model(monkeypatch):
    """The restart's replay begins at the region's WAL checkpoint; the records below it must be
    ones whose outcomes the store holds. eu crashes after its record was fsync'd and before the
    store call ended (the request unanswered): the correct start replays and stores it. A planted
    checkpoint that claims every record (the start replays nothing) leaves that record durable and
    never decided, which only the model's trace check names."""
    import flk.sim.region as region

    schedule = [{"op": "submit", "region": "eu", "tenant": "t0", "pcs": 1, "payload": 1, "signature": "good",
                 "at_s": 0.25}]
    faults = [{"kind": "crash", "at_s": 0.258, "target": "eu"}, {"kind": "restart", "at_s": 0.6, "target": "eu"}]
    good = api.run(_scenario(schedule, faults), seed=1, plots=False)
    recovered = [e for e in good.history.events if e["type"] == "srv.wal_recovered" and e["region"] == "eu"]
    replayed = [e for e in good.history.events if e["type"] == "srv.replay" and e["region"] == "eu"]
    assert [e["next_index"] for e in recovered] == [1] and [e["stored"] for e in replayed] == [True]
    assert check_trace(good.history.events, good.scenario.data).verdict == "behaviour"

    monkeypatch.setattr(region, "replay_start", lambda wal, *args: wal.next_index)
    bad = api.run(_scenario(schedule, faults), seed=1, plots=False)
    assert [e["replay_from"] for e in bad.history.events if e["type"] == "srv.wal_recovered"] == [1]
    rep = check_trace(bad.history.events, bad.scenario.data)
    assert rep.verdict != "behaviour"
    skipped = [v for v in rep.violations if "checkpoint skipped" in v["why"]]
    assert skipped and skipped[0]["invariant"] == "INV-IDEMPOTENT-REPLAY", rep.violations[:3]

    def broken(res) -> set:
        return {c["id"] for c in res.results["invariants"] if not c["ok"]}

    assert broken(bad) == broken(good)  # the in-sim checkers see nothing more (one attempt: unanswered either way)
