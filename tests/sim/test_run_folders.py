"""Run folders are never silently overwritten.

``runs/<scenario>/<seed>/`` holds one run; running the same scenario and seed with other
overrides, other scenario file content or another planted bug is refused (exit 2) unless
``--force``; the very same run again replaces itself (byte-identical history).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flk.sim import api
from flk.sim.scenario import ScenarioError

FLK = [sys.executable, "-m", "flk.impl"]
TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]


def _cli(*args, cwd=None):
    return subprocess.run([*FLK, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _sets(overrides):
    return [part for o in overrides for part in ("--set", o)]


def test_a_run_with_other_overrides_never_replaces_an_earlier_run(tmp_path):
    first = api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path, plots=False)
    before = (first.out_dir / "results.json").read_text()
    other = [*TINY, "workload.rate_per_s=25"]
    with pytest.raises(ScenarioError, match="--force"):
        api.run("duplicate-storm", seed=1, overrides=other, out=tmp_path, plots=False)
    p = _cli("sim", "run", "duplicate-storm", "--seed", "1", "--out", str(tmp_path), "--no-plots", "--quiet",
             *_sets(other))
    assert p.returncode == 2 and "--force" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert (first.out_dir / "results.json").read_text() == before
    again = api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path, plots=False)  # the same run
    assert again.digest == first.digest and again.out_dir == first.out_dir
    p = _cli("sim", "run", "duplicate-storm", "--seed", "1", "--out", str(tmp_path), "--no-plots", "--quiet",
             "--force", *_sets(other))
    assert p.returncode in (0, 1), p.stderr
    stamp = json.loads((first.out_dir / "results.json").read_text())["stamp"]
    assert stamp["overrides"] == other  # replaced on request, and the stamp says with what


def test_changed_scenario_file_content_or_plant_is_another_run(tmp_path):
    from flk.sim.scenario import load

    text = open(load("duplicate-storm").source, encoding="utf-8").read()
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    runs = tmp_path / "runs"
    api.run(str(path), seed=2, overrides=TINY, out=runs, plots=False)
    path.write_text(text.replace("tenants = 3", "tenants = 2", 1), encoding="utf-8")
    with pytest.raises(ScenarioError, match="holds another run"):
        api.run(str(path), seed=2, overrides=TINY, out=runs, plots=False)
    api.run("duplicate-storm", seed=3, overrides=TINY, out=runs, plots=False)
    with pytest.raises(ScenarioError, match="holds another run"):
        api.run("duplicate-storm", seed=3, overrides=TINY, out=runs, plots=False, plant="replay-rewrites-answer")


def test_run_key_covers_everything_that_determines_a_run():
    from flk.sim.scenario import load

    base = load("duplicate-storm", TINY)
    keys = {api.run_key(base, 1, None), api.run_key(base, 2, None), api.run_key(base, 1, "replay-rewrites-answer"),
            api.run_key(load("duplicate-storm", [*TINY, "workload.tenants=2"]), 1, None)}
    assert len(keys) == 4
    assert api.run_key(load("duplicate-storm", TINY), 1, None) == api.run_key(base, 1, None)  # stable


def test_the_stamp_records_a_regression_files_overrides(tmp_path):
    case = tmp_path / "case.toml"
    case.write_text('[regression]\nscenario = "duplicate-storm"\nseed = 4\noverrides = [\n'
                    + "".join(f'  "{o}",\n' for o in TINY) + "]\n", encoding="utf-8")
    res = api.run(str(case), out=tmp_path / "runs", plots=False)
    assert res.results["stamp"]["overrides"] == TINY
    assert res.out_dir == tmp_path / "runs" / "duplicate-storm--case" / "4"  # not the catalog run's folder
