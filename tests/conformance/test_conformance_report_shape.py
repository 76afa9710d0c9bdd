"""The report's shape: summary first, tri-state results, wording by what the adapter returned,
``--json`` with the text's structure, and ``flk conformance diff`` between two runs.

Runs go through the CLI (as a user runs them) on planted-bug adapters from
tests/quality/conformance_adapters/ over the signer ops, so each takes seconds.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from flk.conformance import report_diff, runner
from flk.conformance.adapter_io import Reply
from flk.conformance.vectors import Case, load_cases
from flk.impl.lab.cli import main as flk_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLANTED = ROOT / "tests" / "quality" / "conformance_adapters"
OPS = "canonical_bytes,fmt9,sign_hmac,verify_hmac"


def _run(capsys, tmp_path: pathlib.Path, adapter: str, name: str) -> tuple[int, list[str], dict]:
    out = tmp_path / f"{name}.json"
    code = flk_main(["conformance", "vectors", "--adapter", adapter, "--ops", OPS, "--json", str(out)])
    return code, capsys.readouterr().out.splitlines(), json.loads(out.read_text())


def _planted(name: str) -> str:
    return f"{sys.executable} {PLANTED / name}"


def test_summary_first_and_json_with_the_same_structure(capsys, tmp_path):
    code, out, doc = _run(capsys, tmp_path, _planted("multi_go_order_html.py"), "go")
    assert code == 1
    assert out[2].startswith("summary: ") and out[3] == "root causes (reproduced byte for byte):"
    causes = [line.split(":")[0].strip() for line in out[4:6]]
    assert causes == ["key-order", "html-escape"] == doc["pitfalls"] == [c["class"] for c in doc["summary"]]
    assert out[6] == "pitfalls hit (from the diagnosis): key-order, html-escape"
    assert out.index("details:") < min(i for i, line in enumerate(out) if line.startswith("FAIL "))
    for entry in doc["summary"]:
        assert entry["rule"].startswith("SPEC.md") and entry["count"] > 0 and entry["example"]
    key_order = doc["summary"][0]
    assert key_order["how"][0] == "order shard_id, epoch, pcs_id, merkle_root, D_hat, coh_star, r, budget"
    assert out[-1] == f"{doc['totals']['passed']} passed, {doc['totals']['failed']} failed, {doc['totals']['skipped']} skipped"


def test_rejection_and_acceptance_are_worded_by_what_the_adapter_returned(capsys, tmp_path):
    _, out, doc = _run(capsys, tmp_path, _planted("bug_verdict_not_error.py"), "verdict")
    text = "\n".join(out)
    assert "rejected with a verdict (valid: false) where the input is malformed" in text
    assert "accepted" not in next(line for line in out if line.startswith("  verdict-not-error: "))
    _, out, doc = _run(capsys, tmp_path, _planted("bug_nan_as_null.py"), "nan")
    line = next(line for line in out if line.startswith("  nan-accepted: "))
    assert "accepted and written" in line or "accepted as validly signed" in line


def test_acceptable_cases_are_counted_apart_with_how_the_adapter_answered():
    cases = [Case("fmt9", "v1", i, "", ("legacy-extension",), {"x": 0.5}, "acceptable", {"text": "0.500000000"})
             for i in (1, 2, 3)]
    answers = iter([{"ok": True, "output": {"text": "0.500000000"}},
                    {"ok": False, "error": {"kind": "invalid_input", "message": "tolerated"}},
                    {"ok": True, "output": {"text": "0.5"}}])

    class Scripted:
        description = "scripted"

        def start(self, timeout=0.0):
            return {"name": "s", "version": "1", "ops": ["fmt9"], "profiles": ["v1"]}

        def call(self, request, timeout):
            return Reply("ok", {"id": 1, **next(answers)})

        def kill(self):
            pass

        def close(self):
            pass

    report = runner.run_cases(Scripted(), cases)
    assert [r.status for r in report.results] == ["acceptable", "acceptable", "fail"]
    assert [r.acceptance for r in report.results[:2]] == ["accepted", "rejected"]
    assert report.counts() == (0, 1, 0) and report.exit_code == 1
    doc = runner.to_json(report)
    assert doc["totals"]["acceptable"] == 2
    assert [c["result"] for c in doc["cases"]] == ["acceptable"] * 3
    assert "acceptable (documented tolerance, neither pass nor fail): 2 case(s), 1 accepted, 1 rejected" in \
        runner.format_text(report)


def test_legacy_extension_vectors_are_acceptable():
    flagged = [c for c in load_cases() if "legacy-extension" in c.flags]
    assert flagged and all(c.acceptable for c in flagged)


def test_diff_names_what_a_release_fixed_broke_and_changed(capsys, tmp_path):
    _, _, old = _run(capsys, tmp_path, _planted("multi_ascii_prehash.py"), "old")
    _, _, new = _run(capsys, tmp_path, _planted("bug_ascii_escape.py"), "new")  # prehash fixed
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(new))
    code = flk_main(["conformance", "diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                     "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and "  fixed: prehash" in out and out[-1] == "verdict: no regression"
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["causes"]["fixed"] == ["prehash"] and d["cases"]["fixed"] and not d["cases"]["broke"]
    code = flk_main(["conformance", "diff", str(tmp_path / "b.json"), str(tmp_path / "a.json")])  # the other way
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and "  new:   prehash" in out and any(line.startswith("  broke (passed, now fail): ") for line in out)


def test_diff_of_a_file_that_is_no_report_is_a_usage_error(capsys, tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    assert flk_main(["conformance", "diff", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2
    assert "not a report" in capsys.readouterr().err
    with pytest.raises(report_diff.ReportError):
        report_diff.load_report(tmp_path / "missing.json")


def test_diff_with_a_broken_adapter_says_its_cases_did_not_run(capsys, tmp_path):
    """An adapter that cannot start fails every case unrun: the diff named them 'broke (passed, now
    fail)' beside '(the same root causes)'. It now says the adapter broke and the cases did not run,
    and compares no causes."""
    _, _, good = _run(capsys, tmp_path, "builtin", "good")
    code, _, bad = _run(capsys, tmp_path, f"{sys.executable} {tmp_path / 'no_such_adapter.py'}", "bad")
    assert code != 0 and bad["broken"]
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(bad))
    code = flk_main(["conformance", "diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                     "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and out[2].startswith("ADAPTER BROKEN in ") and "no_such_adapter.py" in out[2]
    assert "  (not comparable: an adapter broke before its cases ran)" in out
    assert not any(line.startswith("  broke (") for line in out), out
    assert any(line.startswith("  not run (the new run's adapter broke): ") for line in out)
    assert out[-1] == "verdict: REGRESSED (the new run's adapter broke: its cases did not run)"
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["broken"]["new"] and not d["cases"]["broke"] and d["cases"]["not_run"] and d["regressed"]
    code = flk_main(["conformance", "diff", str(tmp_path / "b.json"), str(tmp_path / "a.json")])  # fixed
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and not any(line.startswith("  fixed (") for line in out)
    assert any(line.startswith("  run again (the old run's adapter broke") for line in out)
