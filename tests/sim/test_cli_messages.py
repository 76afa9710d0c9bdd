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


def test_list_items_in_messages_are_counted_from_one(tmp_path):
    bad = 'faults=[{kind="crash",at_s=1.0,target="eu"},{kind="crash",at_s=1.0,target="xx"}]'
    with pytest.raises(ScenarioError) as err:
        load("crr-normal", [bad])
    assert "faults.1.target (fault #2)" in str(err.value)  # the key path as --set spells it, the count from 1
    path = tmp_path / "bad.toml"
    path.write_text('[[regions]]\nid = "a"\n[[faults]]\nkind = "crash"\nat_s = 1.0\ntarget = "b"\n', encoding="utf-8")
    p = _cli("sim", "validate", str(path))
    assert p.returncode == 2 and "(fault #1)" in p.stderr and str(path) in p.stderr
