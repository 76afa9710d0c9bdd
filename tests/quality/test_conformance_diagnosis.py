"""The kit names the bug: every planted-bug adapter is diagnosed with exactly its class.

Each adapter in tests/quality/conformance_adapters/ is the reference with one
classic mistake and declares ``CLASS``, the bug class of
:mod:`flk.conformance.diagnosis` it plants. Run over every vector, the runner's
diagnosis must name that class as the one root cause, reproduce at least one
failing output byte for byte, and leave no failure undiagnosed -- knock-on
failures are folded under the root cause, never reported as other pitfalls.
The reference adapters (builtin, Python, Node) pass 100 %; an adapter that
declares nothing and a verifier that rejects everything fail with messages
saying so.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sys
import textwrap

import pytest

from flk.conformance import runner
from flk.conformance.adapter_io import BuiltinAdapter, ProcessAdapter
from flk.conformance.diagnosis import BUG_CLASSES, EXTRA_CLASSES
from flk.conformance.vectors import load_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLANTED = ROOT / "tests" / "quality" / "conformance_adapters"
VECTORS = ROOT / "spec" / "vectors"
IN_CI = os.environ.get("CI") == "true"
KNOWN_CLASSES = {c.name for c in BUG_CLASSES} | set(EXTRA_CLASSES)


def _declared_class(path: pathlib.Path) -> str:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    sys.path.insert(0, str(PLANTED))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PLANTED))
    return module.CLASS


ADAPTERS = sorted(p.name for p in PLANTED.glob("bug_*.py"))


@pytest.fixture(scope="module")
def all_cases():
    return load_cases(VECTORS)


def test_every_bug_class_has_a_planted_adapter():
    planted = {_declared_class(PLANTED / name) for name in ADAPTERS}
    assert planted <= KNOWN_CLASSES
    assert planted == KNOWN_CLASSES, f"no planted adapter for {sorted(KNOWN_CLASSES - planted)}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_planted_adapter_is_diagnosed_with_exactly_its_class(name, all_cases):
    bug = _declared_class(PLANTED / name)
    report = runner.run_cases(ProcessAdapter([sys.executable, str(PLANTED / name)]), all_cases, timeout=20)
    assert not report.broken and report.exit_code == 1
    diagnosis = report.diagnosis()
    assert list(diagnosis.root_causes) == [bug], f"{name}: root causes {list(diagnosis.root_causes)}"
    assert diagnosis.undiagnosed == [], f"{name}: undiagnosed {diagnosis.undiagnosed[:10]}"
    assert set(diagnosis.knock_on) <= {bug}
    text = "\n".join(runner.format_text(report))
    assert text.index("root causes (reproduced byte for byte):") < text.index("per-flag summary:")
    assert f"  {bug}: " in text


def _node_adapter():
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node not installed: make setup installs nodejs")
        pytest.skip("node not installed")
    return ProcessAdapter([node, str(ROOT / "conformance" / "adapters" / "node" / "adapter.mjs")])


@pytest.mark.parametrize("kind", ["builtin", "python", "node"])
def test_reference_adapters_pass_everything(kind, all_cases):
    if kind == "builtin":
        adapter = BuiltinAdapter()
    elif kind == "python":
        adapter = ProcessAdapter([sys.executable, "-m", "flk.conformance.adapters.python"])
    else:
        adapter = _node_adapter()
    report = runner.run_cases(adapter, all_cases, timeout=20)
    passed, failed, _skipped = report.counts()
    assert failed == 0 and report.problems == [] and report.exit_code == 0
    assert not [r for r in report.results if r.status == "n/a"]
    assert passed > 500


def _script(tmp_path: pathlib.Path, body: str) -> ProcessAdapter:
    path = tmp_path / "adapter.py"
    path.write_text(textwrap.dedent(body))
    return ProcessAdapter([sys.executable, str(path)])


EMPTY_ADAPTER = """
    import json, sys
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "hello":
            output = {"name": "empty", "version": "1", "ops": [], "profiles": []}
            print(json.dumps({"id": request["id"], "ok": True, "output": output}), flush=True)
        else:
            error = {"kind": "unsupported", "message": "nothing"}
            print(json.dumps({"id": request["id"], "ok": False, "error": error}), flush=True)
"""

REJECT_EVERYTHING = """
    import json, sys
    from flk.conformance.ops import OPS, handle
    ops = dict(OPS)
    ops["verify_hmac"] = lambda inp, profile: {"valid": False}
    ops["verify_ed25519"] = lambda inp, profile: {"valid": False}
    for line in sys.stdin:
        print(json.dumps(handle(json.loads(line), ops, "rejects-everything")), flush=True)
"""


def test_empty_adapter_fails_with_a_clear_message(tmp_path, all_cases):
    report = runner.run_cases(_script(tmp_path, EMPTY_ADAPTER), all_cases, timeout=20)
    assert report.exit_code == 1 and report.counts()[:2] == (0, 0)
    text = "\n".join(runner.format_text(report))
    assert "RUN FAILED: the adapter declares no ops and profiles in its hello" in text
    assert "RUN FAILED: nothing was exercised" in text


def test_reject_everything_verifier_fails_and_its_negatives_are_not_applicable(tmp_path, all_cases):
    verify_cases = [c for c in all_cases if c.operation.startswith("verify_")]
    report = runner.run_cases(_script(tmp_path, REJECT_EVERYTHING), verify_cases, timeout=20)
    assert report.exit_code == 1
    not_applicable = [r for r in report.results if r.status == "n/a"]
    negatives = [c for c in verify_cases if c.expected == {"valid": False}]
    assert len(not_applicable) == len(negatives) > 50
    assert all(r.message.startswith("not applicable: positive control failed") for r in not_applicable)
    assert not [r for r in report.results if r.status == "pass" and r.case.expected == {"valid": False}]
    text = "\n".join(runner.format_text(report))
    assert "not applicable (positive control failed):" in text
