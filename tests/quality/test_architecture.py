"""The import directions of spec/ARCHITECTURE.md hold for every module.

The table "Layout and import directions" in ARCHITECTURE.md is the one source:
this test parses it, maps every Python file of the code folders to its unit
(``impl/<package>`` or a top-level folder) and fails on any ``flk`` import
(at module level or inside a function, absolute or relative) of a unit the
row does not list. The compiled sources (``*.c``, ``*.h``) follow the same
table: a project header they ``#include "..."`` belongs to a unit their row must
list (a verifier C file may include a core header; a core C file never includes
a verifier one). ``test_checker_catches_planted_violations`` and
``test_include_checker_catches_planted_violations`` keep the checkers honest.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOPS = ("impl", "sim", "model", "formal", "conformance")


def allowed_table(text: str) -> dict[str, set[str]]:
    section = text.split("## Layout and import directions", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        unit = cells[0].strip("`")
        table[unit] = set(re.findall(r"`([^`]+)`", cells[2]))
    return table


def unit_of(rel: tuple[str, ...]) -> str:
    """``('impl', 'core', 'pcs.py')`` -> ``impl/core``; ``('sim', 'x.py')`` -> ``sim``."""
    if rel[0] == "impl" and len(rel) > 2:
        return f"impl/{rel[1]}"
    return rel[0]


def target_unit(parts: list[str]) -> str | None:
    """Dotted module path (``flk.impl.core.pcs``) -> unit, None if not flk."""
    if len(parts) < 2 or parts[0] != "flk":
        return None
    if parts[1] == "impl" and len(parts) > 2:
        return f"impl/{parts[2]}"
    return parts[1]


def imports_of(path: pathlib.Path, root: pathlib.Path) -> list[tuple[int, list[str]]]:
    rel = list(path.relative_to(root).with_suffix("").parts)
    package = rel if path.name == "__init__.py" else rel[:-1]
    if path.name == "__init__.py":
        package = rel[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["flk"] + package[: len(package) - (node.level - 1)]
            else:
                base = []
            mod = base + (node.module.split(".") if node.module else [])
            if node.module is None or mod in (["flk"], ["flk", "impl"]):
                out += [(node.lineno, mod + [a.name]) for a in node.names]
            else:
                out.append((node.lineno, mod))
    return out


def violations(root: pathlib.Path, table: dict[str, set[str]]) -> list[str]:
    found = []
    for top in TOPS:
        if not (root / top).is_dir():
            continue
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).parts
            unit = unit_of(rel)
            if unit not in table:
                found.append(f"{'/'.join(rel)}: unit {unit} has no row in ARCHITECTURE.md")
                continue
            for lineno, parts in imports_of(path, root):
                tgt = target_unit(parts)
                if tgt is None or tgt == unit:
                    continue
                if tgt not in table[unit]:
                    found.append(f"{'/'.join(rel)}:{lineno}: {unit} imports {'.'.join(parts)} ({tgt} is not in its row)")
    return found


INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def include_violations(root: pathlib.Path, table: dict[str, set[str]]) -> list[str]:
    """Every ``#include "..."`` of a C source or header (resolved from its own folder) that names a
    missing file or a header of a unit the including file's row does not list."""
    found = []
    for top in TOPS:
        if not (root / top).is_dir():
            continue
        for path in sorted(p for p in (root / top).rglob("*") if p.suffix in (".c", ".h")):
            rel = path.relative_to(root).parts
            unit = unit_of(rel)
            text = path.read_text(encoding="utf-8")
            for match in INCLUDE_RE.finditer(text):
                lineno = text.count("\n", 0, match.start()) + 1
                target = (path.parent / match.group(1)).resolve()
                where = f"{'/'.join(rel)}:{lineno}"
                if not target.is_file():
                    found.append(f"{where}: includes {match.group(1)}, which does not exist")
                    continue
                try:
                    tgt = unit_of(target.relative_to(root.resolve()).parts)
                except ValueError:
                    found.append(f"{where}: includes {match.group(1)} from outside the project")
                    continue
                if unit not in table:
                    found.append(f"{where}: unit {unit} has no row in ARCHITECTURE.md")
                elif tgt != unit and tgt not in table[unit]:
                    found.append(f"{where}: {unit} includes {match.group(1)} ({tgt} is not in its row)")
    return found


def test_every_c_include_follows_the_architecture_table():
    table = allowed_table((ROOT / "spec" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    sources = [p for top in TOPS if (ROOT / top).is_dir() for p in (ROOT / top).rglob("*.c")]
    assert {p.relative_to(ROOT).as_posix() for p in sources} >= {"impl/core/_fastcore.c", "impl/verifier/_fastverify.c"}
    bad = include_violations(ROOT, table)
    assert not bad, "C includes against spec/ARCHITECTURE.md:\n" + "\n".join(bad)
    verifier = (ROOT / "impl/verifier/_fastverify.c").read_text(encoding="utf-8")
    assert '#include "../core/_fastcore.h"' in verifier  # the checker sees a cross-unit include


def test_include_checker_catches_planted_violations(tmp_path):
    table = allowed_table((ROOT / "spec" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    (tmp_path / "impl" / "core").mkdir(parents=True)
    (tmp_path / "impl" / "verifier").mkdir(parents=True)
    (tmp_path / "impl" / "core" / "a.h").write_text("#define A 1\n")
    (tmp_path / "impl" / "verifier" / "v.h").write_text('#include "../core/a.h"\n')  # allowed direction
    (tmp_path / "impl" / "core" / "a.c").write_text(
        '#include <Python.h>\n#include "a.h"\n#include "../verifier/v.h"\n  #  include "gone.h"\n')
    bad = include_violations(tmp_path, table)
    assert len(bad) == 2, bad
    assert any("impl/core/a.c:3: impl/core includes ../verifier/v.h (impl/verifier" in b for b in bad)
    assert any("impl/core/a.c:4: includes gone.h, which does not exist" in b for b in bad)


def test_every_import_follows_the_architecture_table():
    table = allowed_table((ROOT / "spec" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert "impl/core" in table and table["impl/core"] == set(), table.get("impl/core")
    bad = violations(ROOT, table)
    assert not bad, "imports against spec/ARCHITECTURE.md:\n" + "\n".join(bad)


def test_every_impl_package_has_a_row():
    table = allowed_table((ROOT / "spec" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    packages = {f"impl/{p.name}" for p in (ROOT / "impl").iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(table), sorted(packages - set(table))
    assert not [p for p in (ROOT / "impl").glob("*.py") if p.name not in ("__init__.py", "__main__.py")], \
        "impl/ holds packages only"


def test_checker_catches_planted_violations(tmp_path):
    table = allowed_table((ROOT / "spec" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    (tmp_path / "impl" / "core").mkdir(parents=True)
    (tmp_path / "impl" / "server").mkdir(parents=True)
    (tmp_path / "sim").mkdir()
    (tmp_path / "impl" / "core" / "x.py").write_text("def f():\n    from ..verifier import pipeline\n")
    (tmp_path / "impl" / "server" / "y.py").write_text("from flk.impl.testing import bare\n")
    (tmp_path / "sim" / "z.py").write_text("import flk.conformance.runner\nfrom flk.impl.core import pcs\n")
    bad = violations(tmp_path, table)
    assert len(bad) == 3, bad
    assert any("impl/core imports flk.impl.verifier" in b for b in bad)
    assert any("impl/server imports flk.impl.testing" in b for b in bad)
    assert any("sim imports flk.conformance" in b for b in bad)
