"""``flk sim shrink``: a failing run reduced to a minimal scenario that still fails the same
invariant, written as a regression case.

The failing run comes from a planted bug (``flk.impl.testing.planted``): a verifier that
rewrites the stored answer when it replays its WAL, which shows only after a crash and
restart. The scenario buries one crash among four harmless faults under 12 agents; the
shrinker must keep exactly the crash and cut agents, duration and rate, and the case it
writes must fail with the bug and pass without it (the bug "fixed")."""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.testing import planted
from flk.sim import api, shrink
from flk.sim.scenario import ScenarioError, load

FLK = [sys.executable, "-m", "flk.impl"]
PLANT = "replay-rewrites-answer"
MULTI_FAULT = """
[scenario]
name = "shrink-me"
description = "several faults under load; only the crash matters to the planted bug"
duration_s = 6.0
quiescence_s = 4.0

[workload]
agents = 12
rate_per_s = 120.0
tenants = 2
dup_rate = 0.1

[[faults]]
kind = "store_latency"
at_s = 0.5
target = "r1"
duration_s = 1.0
ms = 5.0

[[faults]]
kind = "pause"
at_s = 1.5
target = "r1"
duration_s = 0.5

[[faults]]
kind = "crash"
at_s = 2.5
target = "r1"
duration_s = 1.0

[[faults]]
kind = "disk_slow"
at_s = 4.0
target = "r1"
duration_s = 1.0

[[faults]]
kind = "partition"
at_s = 4.5
a = ["r1"]
b = ["clients"]
duration_s = 0.5
"""


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([*FLK, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _failed(results: dict) -> list[str]:
    return shrink.failures(results)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shrink")
    (d / "multi.toml").write_text(MULTI_FAULT, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def planted_run(workdir):
    """The failing run, through the CLI (exit 1: invalid), the planted bug recorded."""
    p = _cli("sim", "run", "multi.toml", "--seed", "1", "--out", "runs", "--no-plots", "--quiet",
             "--plant", PLANT, cwd=workdir)
    assert p.returncode == 1, p.stdout + p.stderr
    run_dir = workdir / "runs" / "shrink-me" / "1"
    results = api.load_run(run_dir)["results"]
    assert results["parameters"]["plant"] == PLANT and results["stamp"]["plant"] == PLANT
    assert _failed(results)[0] == "INV-FWW" and "INV-IDEMPOTENT-REPLAY" in _failed(results)
    return run_dir


@pytest.fixture(scope="module")
def shrunk_cli(workdir, planted_run):
    p = _cli("sim", "shrink", str(planted_run), "--out", "case.toml", cwd=workdir)
    return p, workdir / "case.toml"


def test_planted_bug_needs_the_crash():
    """The bug is invisible without a crash: the same scenario without faults is valid."""
    res = api.run("crash-restart", seed=1, overrides=["scenario.duration_s=2", "scenario.quiescence_s=2",
                                                      "faults=[]"], plots=False, plant=PLANT)
    assert res.valid, _failed(res.results)
    with pytest.raises(ScenarioError, match="no planted bug"):
        api.run("crash-restart", seed=1, plant="no-such-bug")


def test_shrink_keeps_only_the_crash_and_cuts_the_workload(workdir, shrunk_cli):
    p, path = shrunk_cli
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"wrote {path.name}" in p.stdout or f"wrote {path}" in p.stdout
    assert f"replay: flk sim run case.toml --plant {PLANT}" in p.stdout
    assert "shrink: faults 5 -> 1" in p.stderr  # the steps, as they are accepted
    case = tomllib.loads(path.read_text())["regression"]
    assert case["scenario"] == str(workdir.resolve() / "multi.toml") and case["seed"] == 1
    data = load(path).data
    assert [f["kind"] for f in data["faults"]] == ["crash"]  # exactly the fault the bug needs
    assert data["workload"]["agents"] < 12 and data["workload"]["rate_per_s"] < 120
    assert data["scenario"]["duration_s"] < 6.0 and data["scenario"]["quiescence_s"] < 4.0
    assert data["faults"][0]["at_s"] < data["scenario"]["duration_s"]  # the crash still happens
    text = path.read_text()
    assert "# Fails INV-FWW" in text and PLANT in text and "faults 5 -> 1" in text


def test_the_written_case_fails_the_same_invariant_with_the_bug_and_passes_without(workdir, shrunk_cli):
    _, path = shrunk_cli
    buggy = _cli("sim", "run", str(path), "--out", "runs-case", "--no-plots", "--quiet", "--json",
                 "--plant", PLANT, cwd=workdir)
    assert buggy.returncode == 1, buggy.stderr
    assert "INV-FWW" in _failed(__import__("json").loads(buggy.stdout))
    fixed = _cli("sim", "run", str(path), "--out", "runs-fixed", "--no-plots", "--quiet", cwd=workdir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr  # once fixed, a valid regression case


def test_replay_plants_the_recorded_bug_again(workdir, planted_run):
    p = _cli("sim", "replay", str(planted_run), cwd=workdir)
    assert p.returncode == 1 and "reproduced exactly" in p.stdout, p.stdout + p.stderr  # same failing history


def test_shrink_cli_rejects_bad_input_with_exit_2(workdir, planted_run):
    bad = _cli("sim", "shrink", "nowhere", cwd=workdir)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr
    other = _cli("sim", "shrink", str(planted_run), "--invariant", "INV-WAL-FIRST", cwd=workdir)
    assert other.returncode == 2 and "did not fail in this run" in other.stderr, other.stderr
    budget = _cli("sim", "shrink", str(planted_run), "--max-runs", "0", cwd=workdir)
    assert budget.returncode == 2 and "--max-runs" in budget.stderr
    # an --out without .toml would be read back as a catalog name after the whole shrink: refused first
    named = _cli("sim", "shrink", str(planted_run), "--out", "case", "--max-runs", "1", cwd=workdir)
    assert named.returncode == 2 and "--out case: a regression file's name must end in .toml" in named.stderr, named
    assert not (workdir / "case").exists() and "shrink:" not in named.stderr  # no run was spent
    with pytest.raises(ValueError, match="must end in .toml"):
        api.shrink(planted_run, out=workdir / "case.txt")


def test_shrink_refuses_a_valid_run(tmp_path):
    res = api.run("crash-restart", seed=1, overrides=["scenario.duration_s=1", "scenario.quiescence_s=1"],
                  out=tmp_path, plots=False)
    assert res.valid
    p = _cli("sim", "shrink", str(res.out_dir))
    assert p.returncode == 2 and "nothing to shrink" in p.stderr


def test_shrink_from_python_is_deterministic_and_keeps_to_its_budget(tmp_path):
    """``api.shrink(..., verifier_cls=...)`` plants a bug the run directory does not name; with a
    budget of 4 runs it stops early (flagged), and the same input gives the same case."""
    source = tmp_path / "multi.toml"
    source.write_text(MULTI_FAULT, encoding="utf-8")
    bug = planted.world_kwargs(PLANT)
    res = api.run(str(source), seed=1, out=tmp_path / "runs", plots=False, **bug)
    assert not res.valid and "plant" not in res.results["parameters"]
    first = api.shrink(res.out_dir, invariant="INV-IDEMPOTENT-REPLAY", out=tmp_path / "a.toml", max_runs=4, **bug)
    second = api.shrink(res.out_dir, invariant="INV-IDEMPOTENT-REPLAY", out=tmp_path / "b.toml", max_runs=4, **bug)
    assert first.runs == 4 and first.budget_spent and first.confirmed
    assert first.minimal == second.minimal and first.overrides == second.overrides
    assert len(first.minimal["faults"]) < 5
    text_a, text_b = ((tmp_path / f"{n}.toml").read_text().split("\n", 1)[1] for n in "ab")  # line 1: the date
    assert text_a == text_b.replace("b.toml", "a.toml")  # the replay command names the file


@settings(max_examples=200, deadline=None, derandomize=True)
@given(n=st.integers(0, 24), data=st.data())
def test_ddmin_finds_exactly_the_needed_items(n, data):
    items = list(range(n))
    needed = data.draw(st.sets(st.sampled_from(items), min_size=1) if items else st.just(set()))
    calls = []

    def fails(subset):
        calls.append(subset)
        return needed <= set(subset)

    out = shrink.ddmin(items, fails)
    assert out == sorted(needed)  # 1-minimal is exact for a monotone test; order kept
    assert len(calls) <= n * n + 3 * n + 1  # ddmin's worst case, plus the empty list


@settings(max_examples=200, deadline=None, derandomize=True)
@given(lo=st.integers(0, 50), span=st.integers(0, 200), threshold=st.integers(0, 260))
def test_smallest_bisects_to_the_threshold(lo, span, threshold):
    hi = lo + span
    got = shrink.smallest(lo, hi, lambda k: k >= threshold)
    assert got == (max(lo, threshold) if threshold <= hi else None)


TEXT = st.text(st.characters(exclude_categories=("Cs",)))  # TOML cannot hold a lone surrogate
toml_values = st.recursive(
    st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT.filter(bool), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=toml_values)
def test_override_values_round_trip_through_toml(value):
    assert tomllib.loads("v = " + shrink.toml_inline(value))["v"] == value


def test_overrides_between_rebuild_the_target():
    base = load("crash-restart").data
    target = load("crash-restart", ["workload.agents=2", "scenario.duration_s=3.5",
                                    'faults=[{ kind = "crash", at_s = 1.0, target = "r1" }]']).data
    overrides = shrink.overrides_between(base, target)
    assert load("crash-restart", overrides).data == target
    assert shrink.merge_overrides(["workload.agents=4", "faults.0.at_s=2", "workload.tenants=3"], overrides) == [
        "workload.tenants=3", *overrides]


def test_the_printed_replay_command_never_touches_the_source_run(workdir, planted_run, shrunk_cli):
    """Before: the shrunk case once ran into the failing run's own folder, and its stamp
    recorded no overrides although the regression applied several."""
    p, path = shrunk_cli
    before = (planted_run / "results.json").read_text()
    command = next(line for line in p.stdout.splitlines() if line.startswith("replay: flk sim run "))
    args = command.removeprefix("replay: flk sim run ").split()
    run = _cli("sim", "run", *args, "--no-plots", "--quiet", cwd=workdir)  # default --out runs, as printed
    assert run.returncode == 1, run.stdout + run.stderr
    assert (planted_run / "results.json").read_text() == before  # the source run is untouched
    wrote = next(line for line in run.stdout.splitlines() if line.startswith("wrote "))
    shrunk_dir = workdir / wrote.removeprefix("wrote ")
    assert shrunk_dir.resolve() != planted_run.resolve()
    stamp = api.load_run(shrunk_dir)["results"]["stamp"]
    case = tomllib.loads(path.read_text())["regression"]
    assert case["overrides"] and stamp["overrides"] == case["overrides"]  # what was applied


def test_a_candidate_that_stops_the_simulator_is_not_the_failure_and_the_shrink_goes_on():
    """Found by an hour-long flk sim explore: a shrink candidate whose run raised (a simulator
    error) ended the whole exploration. The runner answers "does not fail the target" for it,
    counts it, and keeps going; ddmin then finds the fault that really fails."""
    from flk.sim.scenario import load
    from flk.sim.shrink import Runner, ddmin

    sc = load("crash-restart")

    def run(scenario, seed):
        kinds = [f["kind"] for f in scenario.data["faults"]]
        if kinds == ["pause"]:
            raise RuntimeError("a simulator error")
        return {"invariants": [{"id": "INV-X", "ok": "crash" not in kinds, "violation_count": 1}]}

    runner = Runner(run, sc.name, sc.source, 1, "INV-X", max_runs=50, log=lambda _m: None)
    faults = [dict(f, kind="pause") for f in sc.data["faults"] if f["kind"] == "crash"][:1] + \
        [f for f in sc.data["faults"] if f["kind"] == "crash"][:1]
    data = copy.deepcopy(sc.data)
    assert [f["kind"] for f in faults] == ["pause", "crash"]
    assert runner.fails({**data, "faults": [faults[0]]}) is False and runner.errors == 1
    got = ddmin(faults, lambda subset: runner.fails({**data, "faults": copy.deepcopy(subset)}))
    assert [f["kind"] for f in got] == ["crash"]


def test_shrinking_an_eventually_check_keeps_the_quiescence():
    """A delivery or convergence check is judged after the quiescence; a shrink that cuts the
    quiescence manufactures the failure (the hour-long explore's liveness findings shrank to
    "quiescence 0, no fault"). For an always-check the quiescence is cut as before."""
    from flk.sim.scenario import load
    from flk.sim.shrink import Runner, pass_workload

    sc = load("crash-restart")
    for kind, kept in (("eventually", True), ("always", False)):

        def run(scenario, seed, kind=kind):
            return {"invariants": [{"id": "INV-X", "kind": kind, "ok": False, "violation_count": 1}]}

        runner = Runner(run, sc.name, sc.source, 1, "INV-X", max_runs=200, log=lambda _m: None)
        data = copy.deepcopy(sc.data)
        assert runner.fails(data) and runner.target_kind == kind
        after = pass_workload(runner, data)
        assert (after["scenario"]["quiescence_s"] == data["scenario"]["quiescence_s"]) is kept
