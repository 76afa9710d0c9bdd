"""Exploration at scale, small tier (runs in ``make test``): the swarm draws valid scenarios
deterministically; the small exploration tier reaches every cell of the declared coverage
minimum (the coverage gate); explored seeds replay to the same digest in two other processes
with other ``PYTHONHASHSEED`` values; a small budget finds a planted bug, shrinks it and
deduplicates it; a fork of the RNG after the end changes nothing and a fork at 0 does.

The long runs (every planted bug, the catalog never triggering them, causality plots, the
liveness tier) are in tests/sim/test_explore_tier.py (``FLK_EXPLORE_TIER=1``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.sim import coverage, explore
from flk.sim.rng import Streams
from flk.sim.scenario import load

# the small exploration tier: swarm seeds that together reach every cell of coverage.MINIMUM, picked
# by a greedy cover over the coverage of swarm seeds 1-120 (`flk sim explore --runs 120`, then the
# fewest seeds whose runs hit every declared cell), plus seeds 1 and 2
# 18: a corrupted shipped segment (bitflip_shipped x quarantine) whatever the replication loop's timing -- its
# window is 2.7 s (two ship intervals and more) and nothing else cuts the region meanwhile; seed 30 reached that
# cell only while a segment happened to ship in its 0.4 s after a restart
SMALL_TIER_SEEDS = [1, 2, 13, 18, 21, 30, 85]
# open findings of the search (a fix removes one; seeds 1-120 show them, the small tier may not):
# INV-WAL-FIRST when a pause of a region ends at the instant a crash of it starts (seed 9), and the
# simulator's once-a-second key count raising StoreUnavailable when a replicated region's shard is down
KNOWN_FINDINGS = {"INV-WAL-FIRST", "SIM-ERROR StoreUnavailable"}
PLANT = "fourth-tenant-stale-replay"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**40), mode=st.sampled_from(explore.MODES))
def test_swarm_draw_is_a_valid_scenario_and_deterministic(seed, mode):
    a, b = explore.draw(seed, mode), explore.draw(seed, mode)
    assert a.overrides == b.overrides
    sc = load(explore.BASE, a.overrides)  # the schema accepts every drawn scenario
    assert sc.name == f"swarm-{mode}"
    assert not sc.data["slo"]
    if mode == "liveness":
        assert not sc.data["nemesis"]["enabled"]
        end = sc.data["scenario"]["duration_s"]
        assert all(f["at_s"] + f.get("duration_s", 0.0) <= end for f in sc.data["faults"])
        assert sc.data["scenario"]["quiescence_s"] >= 10.0
    assert {f["kind"] for f in sc.data["faults"]} <= set(explore.FAULT_KINDS)


def _collapsed_retry_after() -> int:
    """The Retry-After the server's AIMD limit answers once failures have collapsed it (what
    a store outage's 503s do), found by driving the shipped limiter, not by its formula."""
    from flk.impl.verifier.admission import AdmissionSettings, build_admission

    limiter = build_admission(AdmissionSettings.from_mapping({"max_inflight": 256})).limiter
    for i in range(60):
        assert limiter.try_acquire(float(i))
        limiter.release(float(i), latency=5.0, ok=False)
    return limiter.retry_after()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**40))
def test_liveness_bound_leaves_room_for_the_longest_retry_after_wait(seed):
    # a client refused 429 at the heal by a collapsed limit waits up to twice its Retry-After (the
    # client's jitter); the bound gives that on top of the base 6 s, two backoff caps and the faults
    told = _collapsed_retry_after()
    assert told == 8 and explore.longest_retry_after_wait() == 2 * told
    d = explore.draw(seed, "liveness")
    sc = load(explore.BASE, d.overrides)
    longest = max((f.get("duration_s", 0.0) for f in sc.data["faults"]), default=0.0)
    repl = 8.0 if len(sc.data["regions"]) > 1 else 0.0
    assert sc.data["scenario"]["quiescence_s"] >= 6.0 + 2 * 2.0 + 2 * told + repl + longest - 0.05


def test_liveness_bound_regression_fails_with_the_bound_that_left_out_retry_after():
    # liveness seed 1000051, shrunk: requests refused 429 (Retry-After 8) at a pause's heal;
    # valid with the bound the explorer now computes, "never answered" with the old one
    import tomllib

    from flk.sim import api
    from flk.sim.scenario import scenario_dir

    case = tomllib.loads((scenario_dir() / "regressions" / "liveness-bound-retry-after.toml").read_text())
    case = case["regression"]
    sc = load(case["scenario"], case["overrides"])
    d = sc.data
    bound = explore.liveness_bound(d["scenario"]["duration_s"], len(d["regions"]), d["faults"])
    assert bound == d["scenario"]["quiescence_s"] == 26.2  # the file holds the bound the explorer computes
    old = round(bound - explore.longest_retry_after_wait(), 1)
    failed, whys = {}, set()
    for q in (bound, old):
        res = api.run(load(case["scenario"], [*case["overrides"], f"scenario.quiescence_s={q}"]),
                      seed=case["seed"], plots=False)
        failed[q] = {c["id"]: c["violation_count"] for c in res.results["invariants"] if not c["ok"]}
        whys |= {v["why"] for c in res.results["invariants"] if not c["ok"] for v in c["violations"]}
    assert failed[bound] == {}
    # 8 since a simulated batch skips its lookup as the server's does (3 before; 2 under the fixed group-commit delay)
    assert failed[old] == {"INV-AT-LEAST-ONCE": 8}
    # the diagnosis: each was refused 429 and the quiescence ended inside its Retry-After wait
    assert whys and all(w.endswith("was answered 429, and the run ended before the client retried") for w in whys)


def test_swarm_seeds_draw_different_scenarios():
    drawn = {json.dumps(explore.draw(s).overrides) for s in range(1, 21)}
    assert len(drawn) == 20
    kinds = {k for s in range(1, 21) for k in explore.draw(s).choices["kinds"]}
    assert len(kinds) >= 10  # the space is explored, not one corner of it


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("42", 42)])
def test_parse_budget(text, seconds):
    assert explore.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 2m", "-3s"])
def test_parse_budget_rejects(text):
    with pytest.raises(ValueError):
        explore.parse_budget(text)


def test_coverage_gate_counts_cells_and_wildcards():
    recs = [{"faults": ["crash"], "invariants": ["INV-FWW"], "situations": ["wal-replayed"]},
            {"faults": ["partition"], "invariants": ["INV-FWW"], "situations": ["partition-cut-clients"]}]
    cov = coverage.aggregate(recs)
    assert coverage.hit(cov, ("crash", "INV-FWW", "wal-replayed")) == 1
    assert coverage.hit(cov, ("*", "INV-FWW", "*")) == 1
    assert coverage.gate(cov, [("crash", "*", "wal-replayed")]) == []
    assert coverage.gate(cov, [("crash", "*", "partition-cut-clients")]) == [("crash", "*", "partition-cut-clients")]


@pytest.fixture(scope="module")
def small_tier(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "small"
    summary = explore.explore(budget_s=None, seeds=SMALL_TIER_SEEDS, mode="safety", out=out, shrink_runs=0)
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    # two explored seeds and one record whose digest is wrong on purpose: the check must count exactly it
    fake = {**records[0], "digest": "0" * 64}
    determinism = explore.determinism_check([records[1], records[-1], fake], 3)
    return out, summary, determinism


def test_small_tier_reaches_the_declared_coverage_minimum(small_tier):
    out, summary, _det = small_tier
    assert summary["runs"] == len(SMALL_TIER_SEEDS)
    assert summary["coverage"]["minimum_missing"] == [], "coverage gate: cells never reached"
    assert (out / "coverage.csv").read_text().startswith("fault,invariant,situation,runs")
    assert (out / "coverage.png").stat().st_size > 1000
    trend = (out.parent / "coverage-trend.csv").read_text().splitlines()
    assert trend[0].startswith("git_commit,") and len(trend) == 2
    # the coverage command reads the exploration folder back to the same cells
    cov = coverage.aggregate(coverage.records_from([out]))
    assert len(cov["cells"]) == summary["coverage"]["cells_hit"]


def test_small_tier_finds_nothing_but_the_known_findings_and_reports_throughput(small_tier):
    out, summary, _det = small_tier
    failed = {c.split(" at ")[0] for f in summary["distinct_failures"] for c in f["checks"]}
    assert failed <= KNOWN_FINDINGS, summary["distinct_failures"]
    for f in summary["distinct_failures"]:  # each comes with its replay command and, unless the
        assert f["replay"].startswith("flk sim run nemesis-random --seed ")  # simulator raised, its folder
        assert f["error"] or (f["run_dir"] and Path(f["run_dir"], "scenario.toml").is_file())
    assert summary["failing_runs"] <= 5
    assert summary["runs_per_core_hour"] > 0 and summary["sim_s_per_wall_s"] > 0
    assert summary["simulated_s"] >= len(SMALL_TIER_SEEDS) * 6


def test_explored_seeds_replay_identically_in_other_processes(small_tier):
    _out, _summary, det = small_tier
    assert det["sampled"] == 3 and det["processes"] == 2 and det["pythonhashseeds"] == ["1", "2"]
    # the two explored seeds replay to their digests under both hash seeds; only the planted wrong digest differs
    assert det["mismatches"] == 1, det["examples"]
    assert det["examples"][0]["explored"] == "0" * 64
    assert det["examples"][0]["runs"][0] == det["examples"][0]["runs"][1]


def test_small_budget_finds_shrinks_and_deduplicates_a_planted_bug(tmp_path):
    summary = explore.explore(budget_s=None, runs=12, mode="safety", out=tmp_path, plant=PLANT,
                              stop_on=("INV-NO-ACKED-LOSS",), stop_after=1, shrink_runs=4)
    found = [f for f in summary["distinct_failures"] if "INV-NO-ACKED-LOSS" in f["checks"]]
    assert found, summary["distinct_failures"]
    f = found[0]
    assert f["found_after_runs"] <= 12
    assert f["regression_candidate"] and Path(f["regression_candidate"]).is_file()
    assert "--plant fourth-tenant-stale-replay" in f["replay"]
    # the same seed without the bug does not fail that check: the search found the bug, not noise
    seed = f["first_seed"]
    clean = explore.run_seed((seed, "safety", None, None, None))
    assert "INV-NO-ACKED-LOSS" not in clean["failed"]


def test_fork_after_the_end_changes_nothing_and_a_fork_at_zero_does():
    from flk.sim import api, causality

    sc = load("client-partition", ["scenario.duration_s=3", "scenario.quiescence_s=2", "faults=[]"])
    res = api.run(sc, seed=1, plots=False)
    assert causality.failed_checks(sc.data, 1, None, None, 0) == [c["id"] for c in res.results["invariants"]
                                                                 if not c["ok"]]
    digest = res.digest
    late, early = _digest_forked(sc, 99.0), _digest_forked(sc, 0.0)
    assert late == digest
    assert early != digest


def _digest_forked(sc, t):
    from flk.sim.causality import _fork_at
    from flk.sim.world import World

    world = World(sc, 1)
    world.env.process(_fork_at(world, t, 5))
    return world.run().digest


def test_streams_fork_reseeds_handed_out_and_later_streams():
    s = Streams(7)
    held = s.get("a")
    before = Streams(7).get("a").random()
    s.fork(1)
    assert held.random() != before
    again = Streams(7)
    again.get("a")
    again.fork(1)
    assert again.get("b").random() == s.get("b").random()


@pytest.mark.parametrize("argv", [["--budget", "soon"], ["--runs", "0"], ["--plant", "no-such-bug", "--runs", "1"],
                                  ["--scenario", "no-such-scenario", "--runs", "1"], ["--seeds", "9-3"]])
def test_cli_explore_rejects_bad_input(argv, capsys):
    from flk.impl.lab import cli

    assert cli.main(["sim", "explore", *argv]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_cli_coverage_rejects_a_folder_that_holds_no_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flk.impl", "sim", "coverage", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_cli_coverage_of_the_small_tier_folder(small_tier, capsys):
    from flk.impl.lab import cli

    out, _summary, _det = small_tier
    assert cli.main(["sim", "coverage", str(out), "--out", str(out.parent / "cov")]) == 0
    text = capsys.readouterr().out
    assert "cells (fault x invariant x situation) hit" in text and "NOT REACHED" not in text
    assert (out.parent / "cov" / "coverage.png").is_file()


def test_bench_explore_quick_reports_figures():
    from flk.impl.lab.bench import explore as bench

    fig = bench.run(repeat=1, quick=True)
    assert fig["swarm_seeds"] == bench.QUICK_SEEDS and fig["repeat"] == 1
    assert fig["runs_per_core_hour"] > 0 and fig["sim_s_per_wall_s"] > 0 and fig["anchor_runs_per_core_hour"] > 0


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 10_000), data=st.data())
def test_the_wilson_interval_holds_the_observed_proportion(n, data):
    """Every failed-of-forks count: 0 <= low <= k/n <= high <= 1 (at k = n rounding gave a high of
    1 - 1e-16, and flk sim causality died drawing a negative error bar)."""
    from flk.sim.causality import wilson

    k = data.draw(st.integers(0, n))
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)


def test_causality_of_a_certain_failure_draws_its_plot(tmp_path):
    """A failure every fork repeats (p = 1 at each checkpoint): the analysis writes its plot and
    says when it became certain. An overload run whose clients give up after one 429; 6 forks per
    point, the smallest count whose all-failed interval rounded below 1."""
    from flk.sim import api, causality

    res = api.run("overload-backpressure", seed=1, overrides=[
        "workload.rate_per_s=2000", "scenario.duration_s=0.5", "workload.max_attempts=1", "scenario.quiescence_s=0.5"],
        out=tmp_path / "run", plots=False)
    assert not res.valid
    c = causality.analyse(res.out_dir, points=2, forks=6, out=tmp_path / "causality")
    assert [r["failed"] for r in c["curve"]] == [6, 6] and c["target"] == "INV-AT-LEAST-ONCE"
    assert c["certain_at_s"] == 0.0 and (tmp_path / "causality" / "causality.png").read_bytes()[:4] == b"\x89PNG"
    # the forks in a pool of processes (flk.sim.sweep.process_pool) give the same curve
    pooled = causality.analyse(res.out_dir, points=2, forks=6, workers=2, out=tmp_path / "pooled")
    assert pooled["curve"] == c["curve"]
