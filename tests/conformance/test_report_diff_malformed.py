"""``flk conformance diff``: a file that is not a conformance report -- no cases, a case that is
no object, a ``totals`` header its cases disagree with -- is exit 2 naming the file; the
totals it prints are counted from the cases, never taken from the header."""

from __future__ import annotations

import copy
import json

import pytest

from flk.conformance import report_diff
from flk.impl.lab.cli import main as flk_main


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("cv") / "cv.json"
    assert flk_main(["conformance", "vectors", "--adapter", "builtin", "--ops", "fmt9", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def _diff(tmp_path, capsys, old: dict, new: dict) -> tuple[int, str, str]:
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    code = flk_main(["conformance", "diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cases", [[], [None], [1], [{"id": "x"}], [{"status": "pass"}],
                                   [{"id": 1, "status": "pass"}], [{"id": "x", "status": "maybe"}],
                                   [{"id": "x", "status": "pass"}, {"id": "x", "status": "fail"}]])
def test_a_report_without_real_cases_is_exit_2(report, tmp_path, capsys, cases):
    junk = {**report, "cases": cases}
    junk.pop("totals")
    code, out, err = _diff(tmp_path, capsys, report, junk)
    assert code == 2, out
    assert "new.json: not a report" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_totals_that_disagree_with_the_cases_are_exit_2(report, tmp_path, capsys):
    edited = copy.deepcopy(report)
    for case in edited["cases"][:3]:
        case["status"] = "fail"
    code, out, err = _diff(tmp_path, capsys, report, edited)
    assert code == 2, out
    assert "new.json: malformed report" in err and "3 failed" in err, err


def test_the_printed_totals_are_counted_from_the_cases(report, tmp_path, capsys):
    edited = copy.deepcopy(report)
    for case in edited["cases"][:3]:
        case["status"] = "fail"
    del edited["totals"]
    n = len(report["cases"])
    code, out, err = _diff(tmp_path, capsys, report, edited)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].endswith(f"{n} passed, 0 failed, 0 skipped")
    assert lines[1].endswith(f"{n - 3} passed, 3 failed, 0 skipped"), lines[1]
    assert report_diff.diff_reports(report, edited).totals[1]["failed"] == 3
