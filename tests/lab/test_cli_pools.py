"""The options that size a command's pool: ``--seeds`` (each seed in [0, 2^64-1], at most
MAX_SEEDS, checked before a pool starts), ``--workers`` (1 to MAX_LOCAL_WORKERS, an argparse
type) and ``--scheduler`` (an address Dask cannot parse) are one line and exit 2; an error a
worker process raises reaches the command as itself, not as a broken pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.lab import cli
from flk.impl.lab.cli import MAX_LOCAL_WORKERS, UsageError
from flk.impl.lab.cli.cmd_sim import MAX_SEEDS, parse_seeds

MASK64 = (1 << 64) - 1


def _run(capsys, argv):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's usage error
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.one_of(st.integers(0, 50).map(lambda n: (n, n)),
                          st.tuples(st.integers(0, 50), st.integers(0, 50)).map(sorted)), min_size=1, max_size=5))
def test_seeds_are_the_listed_numbers_and_ranges_in_order_each_once(parts):
    text = ",".join(str(a) if a == b and k % 2 else f"{a}-{b}" for k, (a, b) in enumerate(parts))
    listed = [s for a, b in parts for s in range(a, b + 1)]
    if len(set(listed)) == len(listed):
        assert parse_seeds(text) == listed
    else:  # a seed listed twice would run the same run twice
        with pytest.raises(UsageError, match="given twice"):
            parse_seeds(text)


@pytest.mark.parametrize("text,message", [
    (str(MASK64 + 1), "each seed must be in [0, 2^64-1]"),
    ("99999999999999999999999", "each seed must be in [0, 2^64-1]"),
    (f"1-{MAX_SEEDS + 1}", f"more than {MAX_SEEDS:,} seeds"),
    ("1-99999999999999,3", f"more than {MAX_SEEDS:,} seeds"),  # refused before the list is built
    (f"0,1-{MAX_SEEDS - 1},7", f"more than {MAX_SEEDS:,} seeds"),
    ("5-3", "cannot parse"),
    ("x", "cannot parse"),
    ("1,1", "seed 1 given twice"),
    ("1-5,3", "seed 3 given twice"),
    ("1,,2", "an empty item"),
    ("1,2,", "an empty item"),
])
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]").replace("^", r"\^")):
        parse_seeds(text)
    assert parse_seeds(str(MASK64)) == [MASK64]


@pytest.mark.parametrize("argv", [
    ["sim", "sweep", "crr-normal", "--seeds", "1"],
    ["sim", "explore", "--scenario", "crr-normal", "--runs", "1"],
    ["sim", "causality", "no-such-run"],
])
@pytest.mark.parametrize("workers", ["0", "-1", str(MAX_LOCAL_WORKERS + 1), "99999999999999999999999", "two"])
def test_a_bad_worker_count_is_a_usage_error(tmp_path, capsys, argv, workers):
    rc, out, err = _run(capsys, [*argv, "--workers", workers, "--out", str(tmp_path / "out")])
    assert rc == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].endswith("error: argument --workers: " + (  # argparse: the usage, then one line
        f"not a whole number: {workers!r}" if workers == "two" else f"must be 1 to {MAX_LOCAL_WORKERS}, got {workers}"))
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("argv", [
    ["sim", "sweep", "crr-normal", "--seeds", "1"],
    ["sim", "explore", "--scenario", "crr-normal", "--runs", "1"],
])
@pytest.mark.parametrize("address", ["bogus", "-", "../x"])
def test_a_scheduler_address_dask_cannot_parse_is_one_line(tmp_path, capsys, argv, address):
    pytest.importorskip("dask.distributed")
    rc, out, err = _run(capsys, [*argv, "--scheduler", address, "--out", str(tmp_path / "out")])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"--scheduler: {address!r}: " in err


def test_a_workers_error_reaches_the_sweep_as_itself(tmp_path):
    """A run's InvalidInput raised in a pool process arrives unpickled as InvalidInput (it
    arrived as BrokenProcessPool: InvalidInput(field, message) could not be unpickled)."""
    from flk.sim import api

    with pytest.raises(InvalidInput, match=r"^seed: must be an integer in \[0, 2\^64-1\]$"):
        api.sweep("crr-normal", [MASK64 + 1, MASK64 + 2], {}, workers=2, out=tmp_path / "out")


def _ancestry(_job) -> tuple[int, bool]:
    """(In a pool process.) Its parent and whether it sees an object the caller made after import."""
    import os
    import sys

    return os.getppid(), hasattr(sys.modules[__name__], "_MADE_BY_THE_CALLER")


def test_run_pools_start_from_a_forkserver_not_from_the_caller(tmp_path):
    """The sim's pools never fork the caller: a fork copies its objects without its threads, and
    a finaliser that needs one of those threads hangs the child that collects it (a Dask Client a
    failed --scheduler left behind held every forked child 60 s). A child's parent is not the
    caller and it sees nothing the caller made at run time; the sweep, exploration and causality
    pools are all this one."""
    import os
    import pathlib
    import re

    from flk.sim.sweep import process_pool

    globals()["_MADE_BY_THE_CALLER"] = True
    try:
        with process_pool(2) as pool:
            seen = list(pool.map(_ancestry, range(4)))
    finally:
        del globals()["_MADE_BY_THE_CALLER"]
    assert all(parent != os.getpid() and not made for parent, made in seen), seen
    sim = pathlib.Path(__file__).resolve().parents[2] / "sim"
    pools = {p.name for p in sim.glob("*.py") if re.search(r"ProcessPoolExecutor\(", p.read_text())}
    assert pools == {"sweep.py"}, pools  # only process_pool makes one
    users = {p.name for p in sim.glob("*.py") if "process_pool(workers)" in p.read_text()}
    assert users == {"sweep.py", "explore.py", "causality.py"}, users
