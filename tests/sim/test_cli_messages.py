"""``flk sim`` messages a user meets first: every subcommand in the help,
the diff exit codes, "did you mean" for a misspelt scenario or key, ``--set`` errors that name
the override (not the catalog file), list items counted from 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flk.impl.lab.cli import build_parser
from flk.sim.scenario import ScenarioError, load

FLK = [sys.executable, "-m", "flk.impl"]


def _cli(*args):
    return subprocess.run([*FLK, *args], capture_output=True, text=True, timeout=120)


def test_sim_help_lists_every_subcommand_and_diff_says_its_exit_codes():
    p = _cli("sim", "--help")
    assert p.returncode == 0
    sim = build_parser(only="sim")._subparsers._group_actions[0].choices["sim"]
    names = list(sim._subparsers._group_actions[0].choices)
    assert len(names) >= 10
    description = p.stdout.split("positional arguments")[0]
    assert all(name in description for name in names), (names, description)
    d = _cli("sim", "diff", "--help")
    text = " ".join(d.stdout.split())
    assert "1: they differ" in text and "Exit 0" in text


def test_a_misspelt_scenario_or_key_gets_a_suggestion():
    p = _cli("sim", "run", "crr-normall")
    assert p.returncode == 2 and "did you mean 'crr-normal'?" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(ScenarioError, match="did you mean 'rate_per_s'"):
        load("crr-normal", ["workload.rat_per_s=3"])
    with pytest.raises(ScenarioError, match="did you mean 'workload'"):
        load("crr-normal", ["worklaod.rate_per_s=3"])


def test_set_errors_name_the_override_not_the_catalog_file():
    with pytest.raises(ScenarioError) as err:
        load("crr-normal", ["workload.rate_per_s=-3"])
    assert str(err.value).startswith("--set 'workload.rate_per_s=-3'") and "crr-normal.toml" not in str(err.value)
    with pytest.raises(ScenarioError) as err:
        load("crr-normal", ["workload.nope=1"])
    assert str(err.value).startswith("--set 'workload.nope=1'")


def test_set_reaches_a_key_a_list_item_leaves_to_its_default(tmp_path):
    """``regions.1.verify_ms``, ``faults.0.duration_s`` and ``slo.0.op`` are keys of the item's schema
    even where the file leaves them out: --set sets them (it said "unknown key" for a key the
    region table accepts); a typo still gets the suggestion, and a fault's keys are its kind's."""
    from flk.sim import api

    sc = load("crr-normal", ["regions.1.verify_ms=0.5", 'regions.0.dead_process="refuse"'])
    assert sc.data["regions"][1]["verify_ms"] == 0.5 and sc.data["regions"][0]["dead_process"] == "refuse"
    slow = api.run("crr-normal", seed=1, plots=False,
                   overrides=["scenario.duration_s=2", "scenario.quiescence_s=2", "regions.1.verify_ms=5"])
    fast = api.run("crr-normal", seed=1, plots=False, overrides=["scenario.duration_s=2", "scenario.quiescence_s=2"])
    assert slow.digest != fast.digest  # the region's own setting took effect
    with pytest.raises(ScenarioError) as err:
        load("crr-normal", ["regions.0.verify_mss=1"])
    assert "did you mean 'verify_ms'" in str(err.value)
    own = tmp_path / "own.toml"  # a crash and a clock skew that leave their duration and target to defaults
    own.write_text('[scenario]\nname = "own"\n[[regions]]\nid = "r1"\n[[faults]]\nkind = "crash"\nat_s = 1.0\n'
                   '[[faults]]\nkind = "clock_skew"\nat_s = 2.0\n', encoding="utf-8")
    data = load(str(own), ["faults.0.duration_s=3", 'faults.0.target="r1"', "faults.1.skew_s=-5"]).data
    assert data["faults"][0]["duration_s"] == 3 and data["faults"][0]["target"] == "r1"
    assert data["faults"][1]["skew_s"] == -5
    with pytest.raises(ScenarioError, match="unknown key 'faults.0.skew_s'"):
        load(str(own), ["faults.0.skew_s=1"])  # a crash has no skew


def test_list_items_in_messages_are_counted_from_one(tmp_path):
    bad = 'faults=[{kind="crash",at_s=1.0,target="eu"},{kind="crash",at_s=1.0,target="xx"}]'
    with pytest.raises(ScenarioError) as err:
        load("crr-normal", [bad])
    assert "faults.1.target (fault #2)" in str(err.value)  # the key path as --set spells it, the count from 1
    path = tmp_path / "bad.toml"
    path.write_text('[[regions]]\nid = "a"\n[[faults]]\nkind = "crash"\nat_s = 1.0\ntarget = "b"\n', encoding="utf-8")
    p = _cli("sim", "validate", str(path))
    assert p.returncode == 2 and "(fault #1)" in p.stderr and str(path) in p.stderr
