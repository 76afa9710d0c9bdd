"""Every parse of JSON or TOML text in flk's own code goes through flk.impl.core.textdata.

The standard parsers raise RecursionError for deep nesting (and a bare ValueError for an integer
past the digit limit, UnicodeDecodeError for TOML bytes that are not UTF-8), which the callers'
``except ValueError`` / ``except TOMLDecodeError`` did not catch: a file a user names, an HTTP
body or a peer's answer got a traceback or a 500. This test fails on a direct call of
``json.load(s)`` / ``tomllib.load(s)`` (or a name imported from either module) outside
textdata (but for the bench anchor in ALLOWED); the example adapter for other implementers (conformance/examples) imports nothing
of flk and is left alone. ``test_the_check_finds_planted_calls`` keeps the checker honest.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = ("impl", "sim", "model", "formal", "conformance")
OWNER = ROOT / "impl" / "core" / "textdata.py"
EXEMPT = ROOT / "conformance" / "examples"
# (file, call): why it parses directly
ALLOWED = {("impl/lab/bench/verify.py", "json.loads"): "flk bench verify's anchor is the bare standard parser + HMAC"}
PARSERS = {"json": {"load", "loads"}, "tomllib": {"load", "loads"}, "tomli": {"load", "loads"}}


def direct_parses(source: str) -> list[tuple[int, str]]:
    """(line, call) of each direct use of a standard JSON/TOML parser in ``source``."""
    tree = ast.parse(source)
    imported = {}  # local name -> "module.function", from `from json import loads as x`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in PARSERS:
            for alias in node.names:
                if alias.name in PARSERS[node.module]:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in PARSERS and node.attr in PARSERS[node.value.id]:
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in imported:
            found.append((node.lineno, imported[node.id]))
        elif isinstance(node, ast.ImportFrom) and node.module in PARSERS \
                and any(a.name in PARSERS[node.module] for a in node.names):
            found.append((node.lineno, f"from {node.module} import ..."))
    return sorted(set(found))


def source_files() -> list[pathlib.Path]:
    return [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
            if p != OWNER and EXEMPT not in p.parents and "__pycache__" not in p.parts]


def test_no_direct_json_or_toml_parse_outside_textdata():
    files = source_files()
    assert len(files) > 150, "the walk found too few files: the check would check nothing"
    found = [f"{p.relative_to(ROOT)}:{line}: {call}" for p in files
             for line, call in direct_parses(p.read_text(encoding="utf-8"))
             if (str(p.relative_to(ROOT)), call) not in ALLOWED]
    assert not found, "parse through flk.impl.core.textdata instead:\n" + "\n".join(found)


def test_the_check_finds_planted_calls():
    planted = (
        "import json, tomllib\n"
        "from json import loads as l\n"
        "a = json.loads('1')\n"
        "b = tomllib.load(open('x', 'rb'))\n"
        "c = l('2')\n"
        "d = json.dumps(1)\n"
    )
    assert [call for _line, call in direct_parses(planted)] == [
        "from json import ...", "json.loads", "tomllib.load", "json.loads"]
    assert direct_parses("from flk.impl.core import textdata\nx = textdata.json_loads('1')\n") == []
