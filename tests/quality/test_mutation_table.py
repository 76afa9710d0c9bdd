"""The mutation table in spec/INVARIANTS.md cannot drift from the tests.

Every required mutant (``REQUIRED``: the planted bugs the lab must catch) has a row; every row names at least one catching test; every
named test exists (file and function). The catching tests themselves run in `make test`.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIRED = {"dedup before verify", "overwrite on duplicate", "`x*1e9` rounding", "ack before WAL fsync",
            "dedup not scoped by tenant"}


def _table() -> dict[str, list[str]]:
    text = (ROOT / "spec" / "INVARIANTS.md").read_text(encoding="utf-8")
    section = text.split("## Mutation check", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("mutant", "---") and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = re.findall(r"`(tests/[^`:]+\.py::[A-Za-z_0-9]+)`", " ".join(cells[2:]))
    return rows


def _functions(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_required_mutant_has_a_row_with_a_catching_test():
    rows = _table()
    assert REQUIRED <= set(rows), REQUIRED - set(rows)
    for mutant, tests in rows.items():
        assert tests, f"{mutant}: no catching test named"


def test_every_named_test_exists():
    for mutant, tests in _table().items():
        for ref in tests:
            file, func = ref.split("::")
            path = ROOT / file
            assert path.exists(), f"{mutant}: {file} does not exist"
            assert func in _functions(path), f"{mutant}: {file} has no function {func}"
