"""README's command table names every ``flk`` command and every subcommand or bench name
its parser accepts: the table is where a user looks first, and it drifted once (three
commands and a dozen subcommands were missing)."""

from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from flk.impl.lab import cli

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, str]:
    """Command name -> the text of its rows in README's command table (a command may have two)."""
    rows: dict[str, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `flk ([a-z-]+)", line)
        if m:
            rows[m.group(1)] = rows.get(m.group(1), "") + line
    return rows


def _subcommands(name: str) -> list[str]:
    """The subcommands (or a positional's choices: ``flk bench NAME``) of ``flk name``."""
    parser = cli.build_parser(only=name)
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: list[str] = []
    for action in top.choices[name]._actions:
        if isinstance(action, argparse._SubParsersAction) or (action.choices and not action.option_strings):
            found += list(action.choices)
    return found


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_the_command_table_names_every_command_and_subcommand(name):
    rows = _rows()
    assert name in rows, f"README's command table has no row for flk {name}"
    missing = [sub for sub in _subcommands(name) if not re.search(rf"(?<![\w-]){re.escape(sub)}(?![\w-])", rows[name])]
    assert not missing, f"flk {name}: README's row does not name {missing}"
