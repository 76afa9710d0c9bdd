"""``flk.impl.lab.cli.count``: the one argparse type of a number of things to show or list
(``flk history check --show``, ``flk policy diff --limit``): a whole number >= 0, anything else a
usage error naming the option (exit 2)."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.lab import cli


@given(st.one_of(st.integers(-10**6, 10**6).map(str), st.text(max_size=12)))
def test_a_count_is_a_whole_number_of_zero_or_more(text):
    try:
        expected = int(text, 10)
    except ValueError:
        expected = None
    if expected is not None and expected >= 0:
        assert cli.count(text) == expected
        return
    with pytest.raises(argparse.ArgumentTypeError, match="must be 0 or more|not a whole number"):
        cli.count(text)


@pytest.mark.parametrize("argv", [["history", "check", "h.jsonl", "--show", "-1"],
                                  ["policy", "diff", "a", "b", "--wal", "w", "--limit", "-1"]])
def test_a_negative_count_is_exit_2_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {argv[-2]}: must be 0 or more, got -1" in err, err
