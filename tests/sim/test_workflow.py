"""The researcher's loop: run directories that never collide, sweeps that keep every
sweep and aggregate (typed columns, bootstrap CIs, failing seeds with replay commands),
``flk sim diff``, and the reproducibility stamp with a saved scenario equal to what ran."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib

import pandas as pd
import pytest

from flk.sim import api, progress, sweep
from flk.sim.scenario import ScenarioError, load

FLK = [sys.executable, "-m", "flk.impl"]
TINY = ["scenario.duration_s=2", "scenario.quiescence_s=3", "workload.rate_per_s=150"]
TINY_PARAMS = {"scenario.duration_s": ["2"], "scenario.quiescence_s": ["3"]}


def _cli(*args, timeout=300):
    return subprocess.run([*FLK, *args], capture_output=True, text=True, timeout=timeout)


def _sets(overrides):
    return [part for o in overrides for part in ("--set", o)]


def test_two_files_with_the_same_scenario_name_never_overwrite_each_other(tmp_path):
    source = load("duplicate-storm").source
    text = open(source, encoding="utf-8").read()
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text(text, encoding="utf-8")
    second.write_text(text, encoding="utf-8")  # same scenario.name, another file
    runs = tmp_path / "runs"
    done = api.run(str(first), seed=1, overrides=TINY, out=runs, plots=False)
    before = (done.out_dir / "results.json").read_text()
    with pytest.raises(ScenarioError, match="different file with the same name"):
        api.run(str(second), seed=1, overrides=TINY, out=runs, plots=False)
    assert (done.out_dir / "results.json").read_text() == before  # the first run is untouched
    p = _cli("sim", "run", str(second), "--seed", "1", "--out", str(runs), "--no-plots", *_sets(TINY))
    assert p.returncode == 2 and "scenario.name" in p.stderr and "Traceback" not in p.stderr, p.stderr
    again = api.run(str(first), seed=1, overrides=TINY, out=runs, plots=False)  # its own run: replaced
    assert again.out_dir == done.out_dir and again.digest == done.digest


def test_a_run_prints_where_it_wrote(tmp_path):
    p = _cli("sim", "run", "duplicate-storm", "--seed", "2", "--out", str(tmp_path), "--no-plots", "--quiet",
             *_sets(TINY))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"wrote {tmp_path / 'duplicate-storm' / '2'}" in p.stdout
    assert p.stderr == ""  # no progress bar when stderr is not a terminal


def test_a_sweep_never_overwrites_an_earlier_sweep(tmp_path):
    first = api.sweep("duplicate-storm", [1], TINY_PARAMS, workers=1, out=tmp_path)
    second = api.sweep("duplicate-storm", [2], TINY_PARAMS, workers=1, out=tmp_path)
    assert first.attrs["out_dir"] != second.attrs["out_dir"]
    for table in (first, second):
        saved = pd.read_csv(f"{table.attrs['out_dir']}/results.csv")
        assert list(saved["digest"]) == list(table["digest"])
    same = api.sweep("duplicate-storm", [1], TINY_PARAMS, workers=1, out=tmp_path)
    assert same.attrs["out_dir"] == first.attrs["out_dir"]  # one spec, one folder, same content
    assert list(same["digest"]) == list(first["digest"])


def test_sweep_aggregates_with_typed_numerically_sorted_parameters(tmp_path):
    params = {**TINY_PARAMS, "workload.rate_per_s": ["10", "2", "5"]}
    table = api.sweep("duplicate-storm", [1, 2, 3], params, workers=2, out=tmp_path)
    assert pd.api.types.is_integer_dtype(table["workload.rate_per_s"])
    assert list(dict.fromkeys(table["workload.rate_per_s"])) == [2, 5, 10]
    folder = table.attrs["out_dir"]
    parquet = pd.read_parquet(f"{folder}/results.parquet")
    assert pd.api.types.is_integer_dtype(parquet["workload.rate_per_s"])
    summary = pd.read_csv(f"{folder}/aggregate.csv")
    assert set(summary["metric"]) == set(table.attrs["headline"]) and "error_rate" in set(summary["metric"])
    assert list(dict.fromkeys(summary["workload.rate_per_s"])) == [2, 5, 10]
    assert (summary["runs"] == 3).all()
    assert ((summary["ci95_low"] <= summary["mean"]) & (summary["mean"] <= summary["ci95_high"])).all()
    latency = summary[summary["metric"] == "latency_p95_ms"]
    assert (latency["ci95_high"] > latency["ci95_low"]).any()  # a real interval, not a point
    means = table.groupby("workload.rate_per_s")["latency_p95_ms"].mean()
    assert list(latency["mean"]) == pytest.approx(list(means))
    for metric in table.attrs["headline"]:
        assert (tmp_path / folder / f"{metric}-vs-workload.rate_per_s.png").exists()


def test_bootstrap_interval_is_deterministic_and_contains_the_mean():
    values = [3.0, 9.0, 4.0, 12.0, 5.5]
    low, high = sweep.confidence_interval(values)
    assert (low, high) == sweep.confidence_interval(values)
    assert low < sum(values) / len(values) < high
    assert sweep.confidence_interval([2.0]) == (2.0, 2.0)


def test_sweep_lists_failing_seeds_with_commands_that_replay_them(tmp_path):
    # a planted failure: an error-rate SLO below zero no run can meet, at one parameter point only
    args = ["sim", "sweep", "duplicate-storm", "--seeds", "1-2", "--workers", "1", "--out", str(tmp_path),
            "--param", "slo.0.value=-1.0,1.0", "--param", "scenario.duration_s=2", "--param", "scenario.quiescence_s=3"]
    p = _cli(*args)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "4 runs, 2 failing" in p.stdout and "wrote " in p.stdout
    folder = re.search(r"^wrote (\S+)", p.stdout, re.M).group(1)
    failing = pd.read_csv(f"{folder}/failures.csv")
    assert sorted(failing["seed"]) == [1, 2] and all("SLO error_rate" in f for f in failing["failed"])
    assert all("slo.0.value=-1.0" in o for o in failing["overrides"])
    table = pd.read_csv(f"{folder}/results.csv")
    for row in failing.to_dict("records"):
        rerun = shlex.split(row["rerun"])
        assert rerun[:3] == ["flk", "sim", "run"]
        again = _cli(*rerun[1:], "--out", str(tmp_path / "again"), "--no-plots")
        assert again.returncode == 1, again.stdout + again.stderr
        digest = table[(table["seed"] == row["seed"]) & ~table["valid"]]["digest"].item()
        assert digest in again.stdout
        replay = _cli(*shlex.split(row["replay"])[1:])
        assert replay.returncode == 1 and "reproduced exactly" in replay.stdout, replay.stdout + replay.stderr


def test_diff_of_two_seeds_shows_the_first_diverging_event(tmp_path):
    one = api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path, plots=False)
    two = api.run("duplicate-storm", seed=2, overrides=TINY, out=tmp_path, plots=False)
    p = _cli("sim", "diff", str(one.out_dir), str(two.out_dir), "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    report = json.loads(p.stdout)
    first = report["first_divergence"]
    lines_one = (one.out_dir / "history.jsonl").read_text().splitlines()
    lines_two = (two.out_dir / "history.jsonl").read_text().splitlines()
    number = first["line"]
    assert lines_one[: number - 1] == lines_two[: number - 1]
    assert first["a"] == json.loads(lines_one[number - 1]) != first["b"] == json.loads(lines_two[number - 1])
    assert {m["name"] for m in report["metrics"]} & {"latency_p95_ms", "latency_p50_ms"}
    text = _cli("sim", "diff", str(one.out_dir), str(two.out_dir))
    assert f"first divergence at history.jsonl line {number}" in text.stdout
    same = _cli("sim", "diff", str(one.out_dir), str(one.out_dir))
    assert same.returncode == 0 and "histories identical" in same.stdout
    bad = _cli("sim", "diff", str(one.out_dir), str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_results_json_carries_the_reproducibility_stamp(tmp_path):
    res = api.run("duplicate-storm", seed=7, overrides=TINY, out=tmp_path, plots=False)
    stamp = json.loads((res.out_dir / "results.json").read_text())["stamp"]
    assert stamp["package"] == "flk-lab" and stamp["version"]
    assert stamp["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", stamp["git_commit"])
    if stamp["git_commit"] is not None:  # a checkout: whether its tracked files had uncommitted changes
        tracked_changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                         cwd=api.__file__.rsplit("/", 1)[0], capture_output=True, text=True).stdout
        assert stamp["git_dirty"] is bool(tracked_changes.strip())
    else:
        assert stamp["git_dirty"] is None
    assert re.fullmatch(r"3\.\d+\.\d+", stamp["python"])
    assert set(stamp["libraries"]) == {"simpy", "numpy", "scipy", "networkx"} and all(stamp["libraries"].values())
    assert stamp["seed"] == 7 and stamp["overrides"] == TINY


def test_the_saved_scenario_is_exactly_what_ran(tmp_path):
    res = api.run("duplicate-storm", seed=7, overrides=TINY, out=tmp_path, plots=False)
    saved_path = res.out_dir / "scenario.toml"
    saved = tomllib.loads(saved_path.read_text())
    assert saved["scenario"]["seed"] == 7 and saved["scenario"]["duration_s"] == 2
    assert saved == json.loads(json.dumps(res.scenario.data | {"scenario": saved["scenario"]}))
    assert api.run(str(saved_path), plots=False).digest == res.digest  # its own seed, no overrides


def test_the_progress_bar_does_not_change_the_history(monkeypatch, capsys):
    plain = api.run("duplicate-storm", seed=3, overrides=TINY, plots=False)
    monkeypatch.setattr(progress, "wanted", lambda quiet=False: True)
    shown = api.run("duplicate-storm", seed=3, overrides=TINY, plots=False, progress=True)
    assert "sim s" in capsys.readouterr().err  # the bar was drawn ...
    assert shown.digest == plain.digest  # ... and the history is byte-identical
