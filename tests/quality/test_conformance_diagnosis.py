"""The kit names the bug: every planted-bug adapter is diagnosed with exactly its classes.

Each adapter in tests/quality/conformance_adapters/ is the reference with
classic mistakes planted: ``bug_*.py`` one (``CLASS``), ``multi_*.py`` two or
three (``CLASSES``), each a class of :mod:`flk.conformance.diagnosis`. Run
over every vector (and the self-consistent base64 probes), the diagnosis must
name exactly those classes -- a second bug behind the first included -- leave
no failure undiagnosed, and put the summary (one line per cause) and the
pitfalls derived from it before the details. The pretty-printed-JSON signer
is told it signs other bytes, and no rounding pitfall is listed for it. The
reference adapters (builtin, Python, Node) pass 100 %; an adapter that
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
from flk.conformance.diagnosis import ALL_CLASSES, pitfalls_of
from flk.conformance.vectors import load_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLANTED = ROOT / "tests" / "quality" / "conformance_adapters"
VECTORS = ROOT / "spec" / "vectors"
IN_CI = os.environ.get("CI") == "true"
ROUNDING = {"half-up", "round-tie", "x1e9-rounding", "truncation", "negative-zero", "round-then-shortest",
            "shortest-repr", "integer-valued", "exponent-form"}


def _declared_classes(path: pathlib.Path) -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    sys.path.insert(0, str(PLANTED))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PLANTED))
    return tuple(getattr(module, "CLASSES", None) or (module.CLASS,))


ADAPTERS = sorted(p.name for p in PLANTED.glob("bug_*.py")) + sorted(p.name for p in PLANTED.glob("multi_*.py"))


@pytest.fixture(scope="module")
def all_cases():
    return load_cases(VECTORS)


def test_every_bug_class_has_a_planted_adapter():
    singles = {_declared_classes(PLANTED / name)[0] for name in ADAPTERS if name.startswith("bug_")}
    assert singles == set(ALL_CLASSES), f"no planted adapter for {sorted(set(ALL_CLASSES) - singles)}"
    multi = [_declared_classes(PLANTED / name) for name in ADAPTERS if name.startswith("multi_")]
    assert {2, 3} <= {len(c) for c in multi}


@pytest.mark.parametrize("name", ADAPTERS)
def test_planted_adapter_is_diagnosed_with_exactly_its_classes(name, all_cases):
    classes = _declared_classes(PLANTED / name)
    report = runner.run_cases(ProcessAdapter([sys.executable, str(PLANTED / name)]), all_cases, timeout=20)
    assert not report.broken and report.exit_code == 1
    diagnosis = report.diagnosis()
    assert sorted(pitfalls_of(diagnosis)) == sorted(classes), f"{name}: causes {pitfalls_of(diagnosis)}"
    assert diagnosis.undiagnosed == [], f"{name}: undiagnosed {diagnosis.undiagnosed[:10]}"
    failed = {r.case.case_id for r in report.results if r.status == "fail"}
    explained = [i for n in classes for i in diagnosis.root_causes.get(n, []) + diagnosis.knock_on.get(n, [])]
    assert sorted(explained) == sorted(failed), "every failure under exactly one cause"
    text = runner.format_text(report)
    summary = text.index("root causes (reproduced byte for byte):")
    assert summary < 4 and text[1].startswith("summary: ")
    for bug in classes:  # one line per cause in the summary, before any FAIL block
        line = next(i for i, t in enumerate(text) if t.startswith(f"  {bug}: "))
        assert summary < line < text.index("details:") and " -- e.g. " in text[line] and "SPEC.md" in text[line]
    pitfalls = next(t for t in text if t.startswith("pitfalls hit"))
    assert sorted(pitfalls.split(": ", 1)[1].split(", ")) == sorted(classes)
    doc = runner.to_json(report)
    assert [c["class"] for c in doc["summary"]] == pitfalls_of(diagnosis) == doc["pitfalls"]
    flag = _declared_flag(PLANTED / name)
    if flag:  # the vectors catch it with the flag naming its pitfall (tests/conformance/test_conformance_planted_bugs.py)
        st = report.flag_stats()[flag]
        assert flag in report.failed_flags() and f"  {flag}: {st['fail']} failed of {st['run']} -- " in text_all(text)
        assert report.counts()[0] > 0  # only some cases fail: the adapter is otherwise the reference


def text_all(lines: list[str]) -> str:
    return "\n".join(lines)


def _declared_flag(path: pathlib.Path) -> str:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    sys.path.insert(0, str(PLANTED))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PLANTED))
    return getattr(module, "FLAG", "")


def test_the_pretty_printed_signer_is_told_it_signs_other_bytes(all_cases):
    report = runner.run_cases(ProcessAdapter([sys.executable, str(PLANTED / "bug_pretty_hmac.py")]), all_cases,
                              timeout=20)
    assert {r.case.operation for r in report.results if r.status == "fail"} <= {"sign_hmac", "verify_hmac"}
    assert not any(r.status == "fail" for r in report.results if r.case.operation in ("canonical_bytes", "fmt9"))
    text = "\n".join(runner.format_text(report))
    assert "signs-other-bytes" in text and "signs bytes other than the canonical bytes" in text
    assert "json.dumps(indent=2)" in report.diagnosis().details["signs-other-bytes"][0]
    assert not ROUNDING & set(report.pitfalls())


def test_lenient_base64_behind_another_bug_is_found_by_the_self_consistent_probes(all_cases):
    """A verifier with an unsorted key order fails every reference control (the
    vectors' base64 negatives are n/a); the probes mangle its own signature, so
    the lenient decoder is still named."""
    cases = [c for c in all_cases if c.operation.endswith("_hmac")]
    script = PLANTED / "multi_order_x1e9_base64.py"
    report = runner.run_cases(ProcessAdapter([sys.executable, str(script)]), cases, timeout=20)
    probes = [r for r in report.results if r.case.source == "runner"]
    accepted = [r for r in probes if r.status == "fail"]
    assert accepted and all("self-consistent" in r.case.flags for r in accepted)
    assert {"newline inside", "trailing newline"} <= {r.case.comment.rsplit(", ", 1)[1] for r in accepted}
    assert "lenient-base64" in report.pitfalls()


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
