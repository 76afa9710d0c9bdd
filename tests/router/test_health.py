"""The rotation table's rules (flk.impl.router.health.HealthTable), over every probe sequence.

The table is the one owner of the router's decisions (the simulator's router and the real proxy
both drive it, tests/quality/test_one_core.py); here its rules are checked against the rules as
the module docstring states them, on Hypothesis-chosen thresholds and probe-outcome sequences.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.router import health, wire
from flk.impl.router.health import HealthTable, check_passed

REGIONS = ["eu", "us", "ap"]
probes = st.lists(st.tuples(st.sampled_from(REGIONS), st.booleans()), max_size=80)
thresholds = st.integers(1, 5)


@settings(max_examples=300, deadline=None)
@given(thresholds, thresholds, probes)
def test_a_region_leaves_exactly_after_n_failures_and_returns_exactly_after_m_successes(down_after, up_after, seq):
    table = HealthTable(list(REGIONS), down_after, up_after)
    streak = {r: (None, 0) for r in REGIONS}  # (outcome, how many in a row) per region
    for region, passed in seq:
        was = table.healthy[region]
        last, n = streak[region]
        streak[region] = (passed, n + 1 if last == passed else 1)
        change = table.record(region, passed)
        n = streak[region][1]
        if was and not passed:
            assert (change == "down") == (n == down_after), (region, n, change)  # exactly at the N-th failure
        elif not was and passed:
            assert (change == "up") == (n == up_after), (region, n, change)  # exactly at the M-th success
        else:
            assert change is None  # a pass in rotation or a failure out of it changes nothing
        assert table.healthy[region] == (was if change is None else change == "up")
        assert (table.oks[region], table.fails[region]) == ((n, 0) if passed else (0, n))
        for other in REGIONS:  # one region's checks never move another's counts
            assert table.fails[other] + table.oks[other] == streak[other][1]


@settings(max_examples=300, deadline=None)
@given(thresholds, thresholds, probes, st.sampled_from([*REGIONS, None, "nowhere"]))
def test_resolve_is_a_region_in_rotation_when_one_exists_else_the_home(down_after, up_after, seq, home):
    table = HealthTable(list(REGIONS), down_after, up_after)
    for region, passed in seq:
        table.record(region, passed)
    got = table.resolve(home)
    rotation = table.in_rotation()
    if home in REGIONS and table.healthy[home]:
        assert got == home
    elif rotation:
        assert got == rotation[0]  # the first in rotation in the configured order
    else:
        assert got == (home if home in REGIONS else REGIONS[0])
    assert got in REGIONS


def test_a_down_region_needs_m_successes_in_a_row_a_failure_restarts_the_count():
    table = HealthTable(["eu", "us"], down_after=3, up_after=2)
    assert [table.record("eu", False) for _ in range(3)] == [None, None, "down"]
    assert table.resolve("eu") == "us" and table.in_rotation() == ["us"]
    assert [table.record("eu", ok) for ok in (True, False, True)] == [None, None, None]
    assert table.record("eu", True) == "up" and table.resolve("eu") == "eu"
    for _ in range(3):
        table.record("us", False)
    table.record("eu", False), table.record("eu", False), table.record("eu", False)
    assert table.in_rotation() == [] and table.resolve("us") == "us" and table.resolve(None) == "eu"


def test_the_timeout_rule_and_bad_configurations():
    assert check_passed(True, 0.5, 0.5) and not check_passed(True, 0.5001, 0.5) and not check_passed(False, 0.0, 0.5)
    for bad in ({"regions": []}, {"regions": ["eu"], "down_after": 0}, {"regions": ["eu"], "up_after": 0}):
        with pytest.raises(ValueError):
            HealthTable(**bad)


FORBIDDEN = {"asyncio", "socket", "threading", "simpy", "subprocess", "os", "random", "time", "datetime",
             "selectors"}


@pytest.mark.parametrize("module", [health, wire])
def test_the_core_is_sans_io(module):
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    assert names, "the check read no imports"
    assert not names & FORBIDDEN, names & FORBIDDEN
