"""The diagnosis and the run-level verdicts, unit by unit.

The bug-class hypotheses must reproduce the reference exactly when no bug is
assumed (else every diagnosis is built on sand), each class's spelling of a
value must be recognised as that class, ``js_number`` must be what JavaScript
writes, and the runner's positive controls and declarations must behave.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.conformance import diagnosis, runner
from flk.conformance.adapter_io import Reply
from flk.conformance.vectors import Case
from flk.impl.core import canonical

IN_CI = os.environ.get("CI") == "true"
finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
subsets = st.fixed_dictionaries({
    "D_hat": finite, "budget": finite, "coh_star": finite, "r": finite | st.integers(-10**6, 10**6),
    "epoch": st.integers(0, 2**53 - 1), "merkle_root": text, "pcs_id": text, "shard_id": text,
})


@settings(max_examples=300, deadline=None)
@given(subsets)
def test_the_no_bug_hypothesis_is_the_reference(subset):
    assert diagnosis.Writer().canonical(subset) == canonical.canonical_bytes(subset)


@settings(max_examples=300, deadline=None)
@given(finite | st.integers(-10**12, 10**12))
def test_each_float_spelling_is_recognised_as_its_class(x):
    expected = canonical.fmt9(x)
    case = Case("fmt9", "v1", 1, "", (), {"x": x}, "valid", {"text": expected})
    for bug in diagnosis.BUG_CLASSES:
        for spelling in bug.fmts:
            try:
                written = spelling(x)
            except (ArithmeticError, ValueError, OverflowError):
                continue
            if written != expected:
                assert bug.name in diagnosis.candidate_classes(case, {"text": written}), (bug.name, written)


def test_a_correct_output_is_no_bug_and_an_unmodelled_case_is_not_diagnosed():
    case = Case("fmt9", "v1", 1, "", (), {"x": 0.5}, "valid", {"text": "0.500000000"})
    assert diagnosis.candidate_classes(case, {"text": "0.500000000"}) == []
    assert diagnosis.candidate_classes(case, {"text": "banana"}) == []
    wrong_expectation = Case("fmt9", "v1", 1, "", (), {"x": 0.5}, "valid", {"text": "0.6"})
    assert diagnosis.candidate_classes(wrong_expectation, {"text": "0.5"}) is None


def test_js_number_is_what_javascript_writes():
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node not installed")
        pytest.skip("node not installed")
    import random

    rng = random.Random(20261123)
    values = [0.5, 1e21, 1e-7, 1e-6, 123.0, 2.0**53 + 2, -0.25, 1e20, 5e-324, 1.7976931348623157e308]
    values += [rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-30, 30) for _ in range(300)]
    script = "const v = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log(JSON.stringify(v.map(String)))"
    out = subprocess.run([node, "-e", script], input=json.dumps(values), capture_output=True, text=True, timeout=60)
    assert [diagnosis.js_number(v) for v in values] == json.loads(out.stdout)


# -- positive controls and declarations -----------------------------------------
class VerifierAdapter:
    """verify_hmac answers ``valid`` from ``accepts``; counts the requests it sees."""

    description = "scripted verifier"

    def __init__(self, accepts, ops=("verify_hmac",), profiles=("v1",)):
        self.accepts = accepts
        self.ops, self.profiles = list(ops), list(profiles)
        self.requests = []

    def start(self, timeout=0.0):
        return {"name": "v", "version": "1", "ops": self.ops, "profiles": self.profiles}

    def call(self, request, timeout):
        self.requests.append(request)
        if request["op"] != "verify_hmac":
            return Reply("ok", {"id": 1, "ok": False, "error": {"kind": "unsupported", "message": "no"}})
        return Reply("ok", {"id": 1, "ok": True, "output": {"valid": self.accepts(request)}})

    def kill(self):
        pass

    def close(self):
        pass


SUBSET = {"D_hat": 1.0, "budget": 0.5, "coh_star": 0.5, "epoch": 1, "merkle_root": "0" * 64,
          "pcs_id": "0" * 64, "r": 0.5, "shard_id": "s"}


def _negatives(count):
    return [Case("verify_hmac", "v1", i + 1, "", ("modified-field",),
                 {"subset": SUBSET, "sig": "AAAA", "keys_b64": ["a2V5"]}, "invalid", {"valid": False})
            for i in range(count)]


def test_negatives_of_a_verifier_that_accepts_nothing_are_not_applicable():
    adapter = VerifierAdapter(lambda request: False)
    report = runner.run_cases(adapter, _negatives(3), probes=False)
    assert [r.status for r in report.results] == ["n/a"] * 3
    assert report.counts() == (0, 0, 3) and report.exit_code == 1
    assert any("nothing was exercised" in p for p in report.problems)
    controls = [r for r in adapter.requests if r["input"]["sig"] != "AAAA"]
    assert len(controls) == 1  # one control per distinct record, cached


def test_negatives_count_when_the_control_verifies():
    adapter = VerifierAdapter(lambda request: request["input"]["sig"] != "AAAA")
    report = runner.run_cases(adapter, _negatives(2), probes=False)
    assert [r.status for r in report.results] == ["pass", "pass"] and report.exit_code == 0


def test_a_declared_op_never_exercised_is_noted():
    adapter = VerifierAdapter(lambda request: request["input"]["sig"] != "AAAA", ops=("verify_hmac", "fmt9"))
    cases = _negatives(1) + [Case("fmt9", "v1", 1, "", (), {"x": 1}, "valid", {"text": "1.000000000"})]
    report = runner.run_cases(adapter, cases, probes=False)
    assert report.notices == ["declared op fmt9 was never exercised (every case skipped or not applicable)"]
    assert report.exit_code == 0
    assert "NOTE declared op fmt9 was never exercised" in "\n".join(runner.format_text(report))


def test_an_adapter_declaring_nothing_fails():
    report = runner.run_cases(VerifierAdapter(lambda r: True, ops=(), profiles=()), _negatives(1))
    assert report.exit_code == 1
    assert report.problems[0].startswith("the adapter declares no ops and profiles in its hello")


def test_an_overflowing_product_is_recognised_as_x1e9_rounding():
    case = Case("fmt9", "v1", 1, "", (), {"x": 1e308}, "valid", {"text": canonical.fmt9(1e308)})
    assert diagnosis.candidate_classes(case, {"text": "Infinity"}) == ["x1e9-rounding"]


@pytest.mark.parametrize("bug", ["html-escape", "shortest-repr", "prehash", "line-separator-escape", "key-order"])
def test_a_verify_only_bug_is_named_from_the_verdicts(bug):
    """A verifier that builds its bytes with one bug fails exactly the positives
    whose bytes that bug changes; the verdicts alone name the class."""
    from flk.conformance.hypotheses import CLASS_BY_NAME, answer, spellings
    from flk.conformance.vectors import load_cases

    writer = spellings(CLASS_BY_NAME[bug])[0]
    cases = [c for c in load_cases(profile="v1", operations=["verify_hmac"]) if not c.expects_error]
    results = []
    for case in cases:
        verdict = answer(case.operation, diagnosis.decode_input(case.input), writer)
        results.append(runner.CaseResult(case, "pass" if verdict == case.expected else "fail", output=verdict))
    failed = [r for r in results if r.status == "fail"]
    found = diagnosis.diagnose(failed, results)
    assert failed and diagnosis.pitfalls_of(found) == [bug] and found.undiagnosed == []


def test_a_key_order_never_listed_is_learned_from_the_bytes():
    from flk.conformance.hypotheses import Writer
    from flk.conformance.vectors import load_cases

    order = ("r", "shard_id", "D_hat", "epoch", "pcs_id", "budget", "merkle_root", "coh_star")
    cases = [c for c in load_cases(profile="v1", operations=["canonical_bytes"]) if not c.expects_error]
    results = []
    for case in cases:
        raw = Writer(order=order).canonical(diagnosis.decode_input(case.input)["subset"])
        output = {"bytes_b64": base64.b64encode(raw).decode()}
        results.append(runner.CaseResult(case, "pass" if output == case.expected else "fail", output=output))
    found = diagnosis.diagnose([r for r in results if r.status == "fail"], results)
    assert diagnosis.pitfalls_of(found) == ["key-order"] and found.undiagnosed == []
    assert found.details["key-order"][0] == "order " + ", ".join(order)


def test_a_signer_without_canonical_bytes_has_its_order_searched():
    import hmac

    from flk.conformance.hypotheses import Writer
    from flk.conformance.vectors import load_cases

    order = ("epoch", "r", "D_hat", "shard_id", "budget", "pcs_id", "coh_star", "merkle_root")
    cases = [c for c in load_cases(profile="v1", operations=["sign_hmac"]) if not c.expects_error]
    results = []
    for case in cases[:6]:
        inp = diagnosis.decode_input(case.input)
        raw = Writer(order=order).canonical(inp["subset"])
        sig = base64.b64encode(hmac.digest(base64.b64decode(inp["key_b64"]), raw, "sha256")).decode()
        results.append(runner.CaseResult(case, "pass" if {"sig": sig} == case.expected else "fail", output={"sig": sig}))
    found = diagnosis.diagnose([r for r in results if r.status == "fail"], results)
    assert diagnosis.pitfalls_of(found) == ["key-order"] and found.undiagnosed == []


@pytest.mark.parametrize("layout", ["pretty2", "pretty4", "spaced", "newline", "with-sig", "json-pretty2",
                                    "js-pretty2", "json-spaced"])
def test_a_signer_of_other_bytes_is_told_which_bytes(layout):
    """canonical_bytes right, every signature over other bytes: signs-other-bytes, with the
    layout that reproduces every signature named first, and nothing else."""
    import hmac

    from flk.conformance.hypotheses import LAYOUTS, Writer
    from flk.conformance.vectors import load_cases

    results = []
    for case in load_cases(profile="v1", operations=["sign_hmac", "canonical_bytes", "fmt9"]):
        if case.expects_error:
            continue
        inp = diagnosis.decode_input(case.input)
        out = dict(case.expected)
        if case.operation == "sign_hmac":
            raw = Writer(layout=layout).canonical(inp["subset"])
            out = {"sig": base64.b64encode(hmac.digest(base64.b64decode(inp["key_b64"]), raw, "sha256")).decode()}
        results.append(runner.CaseResult(case, "pass" if out == case.expected else "fail", output=out))
    found = diagnosis.diagnose([r for r in results if r.status == "fail"], results)
    assert diagnosis.pitfalls_of(found) == ["signs-other-bytes"] and found.undiagnosed == []
    assert found.details["signs-other-bytes"][0] == LAYOUTS[layout]
