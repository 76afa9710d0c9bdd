"""``flk compliance report``: a file given as evidence (``--proofs``, ``--conformance``,
``--server-env``) that is not UTF-8, not JSON or not the report its flag takes is exit 2 with one
line naming the flag, the file and what is wrong, before any report is written; real reports of
``flk prove --json`` and ``flk conformance vectors --json`` are evidence."""

from __future__ import annotations

import json

import pytest

from flk.impl.lab.cli import main as flk_main

JUNK = {
    "random.bin": bytes(range(256)) * 8,
    "array.jsonl": b"[1,2]\n",
    "object.json": b'{"a": 1}\n',
    "no-cases.json": b'{"cases": []}\n',
    "null-case.json": b'{"cases": [null]}\n',
    "results-junk.json": b'{"ok": true, "results": [1, 2]}\n',
}


def _report(tmp_path, capsys, *flags: str) -> tuple[int, str, str]:
    code = flk_main(["compliance", "report", "--framework", "soc2", "--out", str(tmp_path / "out"), *flags])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag", ["--proofs", "--conformance"])
@pytest.mark.parametrize("name", sorted(JUNK))
def test_junk_evidence_is_exit_2_before_any_report(tmp_path, capsys, flag, name):
    path = tmp_path / name
    path.write_bytes(JUNK[name])
    code, out, err = _report(tmp_path, capsys, flag, str(path))
    assert code == 2, out
    assert err.startswith(f"flk compliance: error: {flag} {path}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data", [bytes(range(256)) * 8, b"SIGN_ALG=hmac\nthis line has no equals sign\n"])
def test_a_server_env_that_is_no_key_value_text_is_exit_2(tmp_path, capsys, data):
    path = tmp_path / "server.env"
    path.write_bytes(data)
    code, out, err = _report(tmp_path, capsys, "--server-env", str(path))
    assert code == 2, out
    assert err.startswith(f"flk compliance: error: --server-env {path}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def _evidence(doc: dict, kind: str) -> dict:
    return next(e for c in doc["controls"] for e in c["evidence"] if e["kind"] == kind)


def test_real_reports_are_evidence_and_a_failed_case_fails_the_control(tmp_path, capsys):
    assert flk_main(["prove", "--tier", "quick", "--json", "--only", "INV-ROUND.idempotent"]) == 0
    (tmp_path / "proofs.json").write_text(capsys.readouterr().out)
    cv = tmp_path / "cv.json"
    assert flk_main(["conformance", "vectors", "--adapter", "builtin", "--ops", "fmt9", "--json", str(cv)]) == 0
    capsys.readouterr()
    flags = ["--proofs", str(tmp_path / "proofs.json"), "--conformance", str(cv), "--json"]
    code, out, err = _report(tmp_path, capsys, *flags)
    doc = json.loads(out)
    assert _evidence(doc, "proofs")["status"] == "evidenced", doc
    assert _evidence(doc, "conformance")["status"] == "evidenced", doc
    report = json.loads(cv.read_text())
    report["cases"][0]["status"] = "fail"
    report["totals"] = {**report["totals"], "passed": report["totals"]["passed"] - 1, "failed": 1}
    cv.write_text(json.dumps(report))
    code, out, err = _report(tmp_path, capsys, *flags)
    assert code == 1, err
    assert _evidence(json.loads(out), "conformance")["status"] == "failing"
