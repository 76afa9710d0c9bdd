"""Function length ratchet: no function in the code folders is longer than 70 lines.

A long function hides its steps; split it into named ones. The allow-list
below is explicit and may only shrink: an entry must say why, its function
must still exist and may not grow past the recorded length, and an entry whose
function got short (or vanished) must be removed. Nested functions count on
their own and inside their parent.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = ("impl", "sim", "model", "formal", "conformance")
LIMIT = 70

# "path::qualified.name": (recorded length, why it stays long)
ALLOWED: dict[str, tuple[int, str]] = {}


def _walk(node: ast.AST, prefix: str, rel: str, limit: int, found: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            length = child.end_lineno - child.lineno + 1
            if length > limit:
                found[f"{rel}::{name}"] = length
            _walk(child, name + ".", rel, limit, found)
        elif isinstance(child, ast.ClassDef):
            _walk(child, prefix + child.name + ".", rel, limit, found)


def long_functions(root: pathlib.Path, limit: int = LIMIT) -> dict[str, int]:
    found: dict[str, int] = {}
    for folder in FOLDERS:
        if (root / folder).is_dir():
            for path in sorted((root / folder).rglob("*.py")):
                tree = ast.parse(path.read_text(encoding="utf-8"))
                _walk(tree, "", path.relative_to(root).as_posix(), limit, found)
    return found


def ratchet_violations(found: dict[str, int], allowed: dict[str, tuple[int, str]]) -> list[str]:
    bad = []
    for name, length in sorted(found.items()):
        if name not in allowed:
            bad.append(f"{name}: {length} lines (limit {LIMIT}); split it into named steps")
        elif length > allowed[name][0]:
            bad.append(f"{name}: grew to {length} lines (allow-list records {allowed[name][0]})")
    for name in sorted(set(allowed) - set(found)):
        bad.append(f"{name}: now within the limit or gone; remove it from the allow-list")
    for name, (_, why) in allowed.items():
        if len(why.strip()) < 20:
            bad.append(f"{name}: the allow-list entry needs a real justification")
    return bad


def test_no_function_over_the_limit_outside_the_allow_list():
    bad = ratchet_violations(long_functions(ROOT), ALLOWED)
    assert not bad, "\n".join(bad)


def test_ratchet_catches_a_planted_long_function(tmp_path):
    (tmp_path / "impl" / "core").mkdir(parents=True)
    body = "\n".join(f"        x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "impl" / "core" / "long.py").write_text(f"class K:\n    def f(self):\n{body}\n")
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "short.py").write_text("def g():\n    return 1\n")
    found = long_functions(tmp_path)
    assert found == {"impl/core/long.py::K.f": LIMIT + 1}
    assert ratchet_violations(found, {}) == [f"impl/core/long.py::K.f: {LIMIT + 1} lines (limit {LIMIT}); "
                                             "split it into named steps"]
    allowed = {"impl/core/long.py::K.f": (LIMIT + 1, "generated table, kept as one literal")}
    assert ratchet_violations(found, allowed) == []
    assert ratchet_violations({}, allowed) == ["impl/core/long.py::K.f: now within the limit or gone; "
                                               "remove it from the allow-list"]
