"""Code, spec and tests say what a thing is, never which tracker issue asked for it.

A reference like "(issue <number>)" in a docstring or in the spec means nothing to a reader
without the tracker and goes stale when the issue closes; the commit log is where
that history lives. This test fails on any ``issue N`` / ``issue #N`` in the
project's own text files; ``test_the_check_finds_a_planted_reference`` keeps the
checker honest.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = ("impl", "sim", "model", "formal", "conformance", "spec", "tests", "notebooks", "scripts")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "setup.py")
SUFFIXES = {".py", ".md", ".c", ".h", ".toml", ".lark", ".json", ".ipynb", ".sh", ".txt", ".yml", ".yaml", ".cfg"}
SKIP_DIRS = {"__pycache__", ".venv", "build", "node_modules", ".hypothesis", ".pytest_cache"}
PATTERN = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)


def project_files() -> list[pathlib.Path]:
    out = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            rel = path.relative_to(ROOT).parts
            if path.is_file() and path.suffix in SUFFIXES and not SKIP_DIRS.intersection(rel) \
                    and not any(p.endswith(".egg-info") for p in rel):
                out.append(path)
    return out


def references(text: str) -> list[tuple[int, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in PATTERN.finditer(text)]


def test_no_issue_numbers_in_code_spec_or_tests() -> None:
    files = project_files()
    assert len(files) > 200, "the walk found too few files: the checker would check nothing"
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}:{line}: {ref!r}" for line, ref in references(text)]
    assert not found, "say what the thing is instead of naming a tracker issue:\n" + "\n".join(found)


def test_the_check_finds_a_planted_reference() -> None:
    word = "Issue"  # split so that this file holds no reference itself
    planted = f'"""Load generator ({word} 3, item 4).\n\nSee {word.lower()} #18 and {word.lower()}s 7."""\nx = "t{word.lower()} 5"\n'
    assert [line for line, _ in references(planted)] == [1, 3, 3]
    assert references("a (re)issued token; issue the request") == []
