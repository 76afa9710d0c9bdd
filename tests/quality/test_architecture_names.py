"""Every module, class, function and file spec/ARCHITECTURE.md names exists.

The map is only useful while it tells the truth. Inside every backticked span of
ARCHITECTURE.md this test finds

* dotted ``flk`` paths (``flk.impl.storage.wal``, ``flk.impl.dedup.sharded.Ring``,
  ``flk.impl.core.errors.InvalidInput(field, message)``; a ``<name>`` segment such as
  ``flk.impl.lab.cli.cmd_<name>`` must match at least one module of its package and
  the rest of the path must resolve in one of them) -- resolved by importing the
  longest importable module prefix and looking the rest up as attributes (a C
  extension that is not built counts when its ``.c`` source exists);
* repository paths (``impl/core``, ``spec/vectors/*.json``, ``formal/ring.py``,
  ``tests/x.py::test_name``) -- a file or folder must exist (a glob must match,
  a ``::name`` must be a function or class of the file);

and fails naming every one that does not resolve (a renamed or removed module, a
stale class). ``test_the_resolver_refuses_stale_names`` keeps the resolver honest.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import pathlib
import pkgutil
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "spec" / "ARCHITECTURE.md"
TOPS = ("impl", "sim", "spec", "tests", "model", "formal", "conformance", "scripts", "notebooks")
DOTTED = re.compile(r"(?<![\w.])flk(?:\.(?:[A-Za-z_]\w*)?(?:<\w+>)?)+")
PATH = re.compile(r"(?<![\w./-])(?:" + "|".join(TOPS) + r")/[\w./*<>-]*(?:::\w+)?")


def spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def named(text: str) -> tuple[list[str], list[str]]:
    """(dotted flk names, repository paths) in the backticked spans, in order, without repeats."""
    dotted: dict[str, None] = {}
    paths: dict[str, None] = {}
    for span in spans(text):
        for m in DOTTED.finditer(span):
            dotted[m.group(0).rstrip(".")] = None
        for m in PATH.finditer(span):
            paths[m.group(0).rstrip(".")] = None
    return list(dotted), list(paths)


def _lookup(obj: object, attrs: list[str]) -> bool:
    for attr in attrs:
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None  # the module (or a parent) does not exist; any other missing import is a real error
        raise


def resolves_dotted(name: str) -> bool:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if "<" in part:  # a placeholder: some module of the package must match and resolve the rest
            package = _import(".".join(parts[:i]))
            if package is None or not hasattr(package, "__path__"):
                return False
            pattern = re.sub(r"<\w+>", "*", part)
            matches = [m.name for m in pkgutil.iter_modules(package.__path__) if fnmatch.fnmatch(m.name, pattern)]
            return any(resolves_dotted(".".join([*parts[:i], m, *parts[i + 1:]])) for m in matches)
    for cut in range(len(parts), 0, -1):
        module = _import(".".join(parts[:cut]))
        if module is not None:
            return _lookup(module, parts[cut:])
        if cut == len(parts) and (ROOT.joinpath(*parts[1:-1]) / (parts[-1] + ".c")).is_file():
            return True  # a compiled extension that is not built here: its C source is named
    return False


def resolves_path(text: str) -> bool:
    path, _, member = text.partition("::")
    if any(c in path for c in "*<"):
        return any(ROOT.glob(re.sub(r"<\w+>", "*", path)))
    target = ROOT / path
    if not target.exists():
        return False
    if member:
        tree = ast.parse(target.read_text(encoding="utf-8"))
        defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        return any(isinstance(n, defs) and n.name == member for n in ast.walk(tree))
    return True


def stale(text: str) -> list[str]:
    dotted, paths = named(text)
    return [n for n in dotted if not resolves_dotted(n)] + [p for p in paths if not resolves_path(p)]


def test_every_name_architecture_md_gives_resolves() -> None:
    text = DOC.read_text(encoding="utf-8")
    dotted, paths = named(text)
    assert len(dotted) > 50 and len(paths) > 10, "the extractor found too little: it would check nothing"
    assert "flk.impl.storage.wal" in dotted and "flk.sim.region.Region" in dotted
    assert "impl/core/_fastcore.c" in paths
    bad = stale(text)
    assert not bad, "ARCHITECTURE.md names what does not exist (rename or remove it):\n" + "\n".join(bad)


def test_the_resolver_refuses_stale_names() -> None:
    planted = (
        "`flk.impl.storage.wal.SegmentedLog` `flk.impl.storage.nowhere` `flk.impl.dedup.sharded.Rink` "
        "`x = flk.impl.core.errors.InvalidInput(f, m)` `flk.impl.lab.cli.cmd_<name>` "
        "`flk.impl.lab.cli.nope_<name>` `impl/core/_fastcore.c` `impl/core/_gone.c` `spec/vectors/*.json` "
        "`spec/vectors/*.yaml` `tests/quality/test_architecture.py::allowed_table` "
        "`tests/quality/test_architecture.py::no_such_test`"
    )
    assert stale(planted) == [
        "flk.impl.storage.nowhere", "flk.impl.dedup.sharded.Rink", "flk.impl.lab.cli.nope_<name>",
        "impl/core/_gone.c", "spec/vectors/*.yaml", "tests/quality/test_architecture.py::no_such_test",
    ]


MAP_LINE = re.compile(r"^\* (?::mod:`\.(\w+)`|``([\w.]+)``)\s+-- \S")


def package_map(init: pathlib.Path) -> tuple[list[str], list[str]]:
    """(modules, other files) the opening docstring of a package's ``__init__.py`` lists."""
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    mods, files = [], []
    for line in doc.splitlines():
        m = MAP_LINE.match(line.strip())
        if m:
            (mods if m.group(1) else files).append(m.group(1) or m.group(2))
    return mods, files


def map_problems(package: pathlib.Path) -> list[str]:
    mods, files = package_map(package / "__init__.py")
    present = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    present |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    out = [f"{package.name}: module {m} is not in the map" for m in sorted(present - set(mods))]
    out += [f"{package.name}: the map lists {m}, which does not exist" for m in mods if m not in present]
    out += [f"{package.name}: the map lists {f}, which does not exist" for f in files if not (package / f).is_file()]
    out += [f"{package.name}: {m} is listed twice" for m in sorted({m for m in mods if mods.count(m) > 1})]
    return out


def test_every_impl_package_opens_with_a_true_map_of_its_modules() -> None:
    packages = sorted(p.parent for p in (ROOT / "impl").glob("*/__init__.py"))
    assert len(packages) >= 10
    bad = [problem for package in packages for problem in map_problems(package)]
    assert not bad, "impl/*/__init__.py maps are out of date:\n" + "\n".join(bad)


def test_the_map_check_sees_a_missing_and_a_stale_module(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package.\n\n* :mod:`.a` -- one\n* :mod:`.gone` -- two\n* ``x.c`` -- C\n"""\n')
    (pkg / "a.py").write_text("")
    (pkg / "b.py").write_text("")
    assert map_problems(pkg) == ["pkg: module b is not in the map", "pkg: the map lists gone, which does not exist",
                                 "pkg: the map lists x.c, which does not exist"]
