"""Every compiled fast path sits behind the one registry, with a differential test.

``flk.impl.core.accel`` lists each accelerated function (name, extension,
pure reference, differential test). These checks keep it the only seam:

* each entry names a test that exists and is marked
  ``@pytest.mark.differential(<entry>)`` (the marker makes that test fail when
  it never calls the compiled function, tests/conftest.py), and a reference
  that resolves to a callable;
* every function the C sources export is an entry of its own extension, and
  every entry is exported (read from the ``PyMethodDef`` tables, so this holds
  without a compiler too);
* every entry is bound by some consumer, and ``accel.pure()`` routes every
  binding to the pure path and back;
* no code imports an extension except through the registry, and no test
  rebinds a ``_compiled_*`` global by hand.

``test_checker_catches_planted_gaps`` keeps the checker itself honest.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import flk.impl.dedup.sqlite  # noqa: F401 -- registers and binds open_rows (the SQLite store's rows)
import flk.impl.verifier.core  # noqa: F401 -- binds accept_v1 (the batch core)
import flk.impl.verifier.pipeline  # noqa: F401 -- registers the verifier's entries
import flk.sim.history  # noqa: F401 -- registers the simulator's entry (line_sink)
from flk.impl.core import accel

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = {"flk.impl.core._fastcore": ROOT / "impl/core/_fastcore.c",
           "flk.impl.verifier._fastverify": ROOT / "impl/verifier/_fastverify.c",
           "flk.sim._fasthistory": ROOT / "sim/_fasthistory.c",
           "flk.impl.dedup._fastsqlite": ROOT / "impl/dedup/_fastsqlite.c"}


def _marked_entries(function: ast.FunctionDef) -> set[str]:
    names: set[str] = set()
    for deco in function.decorator_list:
        if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "differential"
                and ast.unparse(deco.func.value) == "pytest.mark"):
            names |= {a.value for a in deco.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


def registry_gaps(entries, root: pathlib.Path) -> list[str]:
    """What is wrong with ``entries``: a missing or unmarked differential test, an unresolvable reference."""
    gaps = []
    for e in entries:
        path, _, test = e.test.partition("::")
        file = root / path
        if not file.is_file():
            gaps.append(f"{e.name}: test file {path} does not exist")
            continue
        functions = {n.name: n for n in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                     if isinstance(n, ast.FunctionDef)}
        if test not in functions:
            gaps.append(f"{e.name}: {path} has no test {test}")
        elif e.name not in _marked_entries(functions[test]):
            gaps.append(f"{e.name}: {e.test} is not marked @pytest.mark.differential({e.name!r})")
        try:
            if not callable(e.resolve_reference()):
                gaps.append(f"{e.name}: reference {e.reference} is not callable")
        except (ImportError, AttributeError) as exc:
            gaps.append(f"{e.name}: reference {e.reference} does not resolve ({exc})")
    return gaps


def exported(source: pathlib.Path) -> set[str]:
    """The Python names of the C source's module PyMethodDef table (the one ``.m_methods`` names;
    a type's method table is not module-level)."""
    text = source.read_text(encoding="utf-8")
    named = re.search(r"\.m_methods = (\w+),", text)
    name = named.group(1) if named else r"\w+"
    table = re.search(rf"static PyMethodDef {name}\[\] = \{{(.*?)\n\}};", text, re.S)
    assert table, f"{source}: no PyMethodDef table"
    return set(re.findall(r'\{"(\w+)",', table.group(1)))


def test_every_entry_names_an_existing_marked_differential_test_and_its_reference():
    assert len(accel.entries()) >= 11
    assert registry_gaps(accel.entries(), ROOT) == []


def test_every_compiled_function_is_an_entry_of_its_extension():
    for module, source in SOURCES.items():
        registered = {e.name for e in accel.entries() if e.extension == module}
        assert exported(source) == registered, (module, exported(source) ^ registered)
    assert {e.extension for e in accel.entries()} == set(SOURCES)


def test_every_entry_is_bound_and_pure_routes_every_binding():
    bindings = accel._bindings
    assert {name for _, _, name, _ in bindings} == {e.name for e in accel.entries()}, "an entry nobody binds"
    before = [ns[g] for ns, g, _, _ in bindings]
    with accel.pure():
        assert [ns[g] for ns, g, _, _ in bindings] == [pure for _, _, _, pure in bindings]
        assert all(accel.active(e.name) is None for e in accel.entries())
    assert [ns[g] for ns, g, _, _ in bindings] == before
    if accel.entry("canonical_v1").compiled is not None:
        assert before[0] is not None


def test_counting_counts_calls_through_the_bindings():
    from flk.impl.core import canonical

    if accel.entry("round9").compiled is None:
        pytest.skip("compiled core not active (FLK_PURE=1 or not built)")
    with accel.counting() as counts:
        canonical.round9(0.5)
        canonical.round9(0.25)
        with accel.pure():
            canonical.round9(0.5)
    assert counts["round9"] == 2 and counts["canonical_v1"] == 0


def _imports_an_extension(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [a.name for a in node.names]
        if any(re.search(r"(^|\.)_fast(core|verify|history|sqlite)$", n) for n in names):
            return True
    return False


def test_flk_pure_and_the_extensions_are_read_by_the_registry_only():
    offenders = []
    for top in ("impl", "sim", "model", "conformance", "formal"):
        for path in (ROOT / top).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(ROOT).as_posix()
            if rel == "impl/core/accel.py":
                continue
            if re.search(r"""environ[^\n]*["']FLK_PURE""", text) or _imports_an_extension(ast.parse(text)):
                offenders.append(rel)
    assert offenders == [], "compiled modules or FLK_PURE used outside flk.impl.core.accel"
    assert _imports_an_extension(ast.parse("from . import _fastcore"))
    assert _imports_an_extension(ast.parse("from flk.impl.verifier._fastverify import parse_json"))


def test_no_test_switches_paths_by_hand():
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"\._compiled_\w+\s*=[^=]|setattr\([^)]*_compiled_|\"_compiled_\w+\"", text):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == [], "switch paths with flk.impl.core.accel.pure(), not by rebinding globals"


def test_checker_catches_planted_gaps(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.differential('a')\ndef test_marked():\n    pass\n\n"
        "def test_unmarked():\n    pass\n")
    ref = "flk.impl.core.canonical:pure_round9"
    planted = [
        accel.Accelerated("a", "x", ref, "tests/test_x.py::test_marked", None),  # fine
        accel.Accelerated("b", "x", ref, "tests/test_x.py::test_marked", None),  # marked for another entry
        accel.Accelerated("c", "x", ref, "tests/test_x.py::test_unmarked", None),
        accel.Accelerated("d", "x", ref, "tests/test_x.py::test_gone", None),
        accel.Accelerated("e", "x", ref, "tests/test_y.py::test_marked", None),
        accel.Accelerated("a", "x", "flk.impl.core.canonical:no_such", "tests/test_x.py::test_marked", None),
    ]
    gaps = registry_gaps(planted, tmp_path)
    assert len(gaps) == 5, gaps
    assert [g.split(":")[0] for g in gaps] == ["b", "c", "d", "e", "a"]
