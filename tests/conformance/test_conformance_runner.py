"""The vector runner: verdicts, diffs, reports, and an adapter that misbehaves.

The fixture vectors in ``fixtures/vectors`` are small hand-made files in the
format of spec/ARCHITECTURE.md; the tests against the real spec/vectors live in
test_conformance_adapters.py.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import sys
import time
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.conformance import runner
from flk.conformance.adapter_io import BuiltinAdapter, ProcessAdapter, Reply
from flk.conformance.vectors import Case, decode_f64, decode_input, encode_f64, load_cases
from flk.impl.core.errors import InvalidInput
from flk.impl.lab.cli import main as flk_main

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "vectors"
MISBEHAVE = str(HERE / "misbehaving_adapter.py")


def run_fixture(capsys, *extra: str) -> tuple[int, list[str]]:
    """The CLI over the fixture vectors, without the self-consistent probes (exact vector counts)."""
    code = flk_main(["conformance", "vectors", "--vectors", str(FIXTURES), "--no-probes", *extra])
    out = capsys.readouterr().out.splitlines()
    return code, out


def misbehaving(mode: str, op: str = "fmt9") -> str:
    return f"{sys.executable} {MISBEHAVE} {mode} {op}"


# -- happy path ----------------------------------------------------------------
def test_fixture_vectors_follow_the_vector_schema():
    schema = json.loads((HERE.parents[1] / "spec" / "vectors.schema.json").read_text())
    for path in FIXTURES.glob("*.json"):
        jsonschema.Draft202012Validator(schema).validate(json.loads(path.read_text()))


def test_builtin_passes_fixture_vectors(capsys):
    code, out = run_fixture(capsys, "--adapter", "builtin", "--profile", "all")
    assert code == 0
    cases = load_cases(FIXTURES)
    assert out[-1] == f"{len(cases)} passed, 0 failed, 0 skipped"


def test_filters_by_ops_and_flags(capsys):
    code, out = run_fixture(capsys, "--adapter", "builtin", "--ops", "fmt9", "--flags", "round-tie,negative-zero")
    assert code == 0
    n = sum(1 for c in load_cases(FIXTURES, operations=["fmt9"]) if {"round-tie", "negative-zero"} & set(c.flags))
    assert n > 0 and out[-1] == f"{n} passed, 0 failed, 0 skipped"


def test_reports_are_written(tmp_path, capsys):
    junit, js = tmp_path / "r.xml", tmp_path / "r.json"
    code, out = run_fixture(
        capsys, "--adapter", misbehaving("internal"), "--junit", str(junit), "--json", str(js)
    )
    assert code == 1
    doc = json.loads(js.read_text())
    n_fmt9 = len(load_cases(FIXTURES, profile="v1", operations=["fmt9"]))
    assert doc["totals"]["failed"] == n_fmt9 and doc["exit_code"] == 1
    assert {c["status"] for c in doc["cases"] if c["operation"] == "fmt9"} == {"fail"}
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and int(root.get("failures")) == n_fmt9
    fmt9_suite = [s for s in root if s.get("name") == "fmt9.v1"][0]
    assert len(fmt9_suite.findall("testcase/failure")) == n_fmt9
    assert out[-1] == f"{doc['totals']['passed']} passed, {n_fmt9} failed, 0 skipped"


# -- misbehaving adapters --------------------------------------------------------
def test_crash_is_reported_per_case_and_adapter_restarted(capsys):
    # sign_hmac crashes the adapter; verify_hmac (the next file) must run on a restarted one
    code, out = run_fixture(capsys, "--adapter", misbehaving("crash", "sign_hmac"))
    assert code == 1
    text = "\n".join(out)
    n_bad = len(load_cases(FIXTURES, profile="v1", operations=["sign_hmac"]))
    assert text.count("crash: adapter exited with status 3") == n_bad
    assert "dying on purpose" in text  # stderr tail quoted
    assert f"adapter restarts: {n_bad}" in text
    total = len(load_cases(FIXTURES, profile="v1"))
    assert out[-1] == f"{total - n_bad} passed, {n_bad} failed, 0 skipped"


def test_hang_hits_the_per_case_timeout(capsys):
    t0 = time.monotonic()
    code, out = run_fixture(capsys, "--adapter", misbehaving("hang"), "--ops", "fmt9,merkle_root",
                            "--flags", "round-tie,nan", "--timeout", "0.5")
    assert time.monotonic() - t0 < 30
    assert code == 1
    assert any("timeout: no response within 0.5 s" in line for line in out)
    assert out[-1].endswith("failed, 0 skipped") and not out[-1].startswith("0 passed, 0")


@pytest.mark.parametrize(
    "mode, words",
    [
        ("garbage", "not UTF-8 JSON"),
        ("wrong-id", "does not match request id"),
        ("no-ok", "no boolean 'ok'"),
        ("bad-kind", "error kind 'oops'"),
        ("internal", "expected"),
    ],
)
def test_malformed_responses_fail_only_their_case(capsys, mode, words):
    code, out = run_fixture(capsys, "--adapter", misbehaving(mode))
    assert code == 1
    n_fmt9 = len(load_cases(FIXTURES, profile="v1", operations=["fmt9"]))
    total = len(load_cases(FIXTURES, profile="v1"))
    assert any(words in line for line in out)
    # one bad line does not shift later answers: every other case still passes
    assert out[-1] == f"{total - n_fmt9} passed, {n_fmt9} failed, 0 skipped"


def test_partial_line_then_exit_is_one_crash(capsys):
    code, out = run_fixture(capsys, "--adapter", misbehaving("partial-exit", "sign_hmac"))
    assert code == 1
    n_bad = len(load_cases(FIXTURES, profile="v1", operations=["sign_hmac"]))
    total = len(load_cases(FIXTURES, profile="v1"))
    assert sum("after an unterminated line" in line for line in out) == n_bad
    assert out[-1] == f"{total - n_bad} passed, {n_bad} failed, 0 skipped"


def test_absurdly_nested_response_is_malformed_not_a_runner_crash(capsys):
    code, out = run_fixture(capsys, "--adapter", misbehaving("deep"))
    assert code == 1
    n_fmt9 = len(load_cases(FIXTURES, profile="v1", operations=["fmt9"]))
    total = len(load_cases(FIXTURES, profile="v1"))
    assert out[-1] == f"{total - n_fmt9} passed, {n_fmt9} failed, 0 skipped"


def test_reports_survive_lone_surrogates_and_control_characters(tmp_path, capsys):
    junit, js = tmp_path / "r.xml", tmp_path / "r.json"
    code, out = run_fixture(capsys, "--adapter", misbehaving("nasty"), "--junit", str(junit), "--json", str(js))
    assert code == 1
    assert any("bad \\ud800" in line for line in out)  # shown escaped, not a crash
    ET.parse(junit)  # well-formed XML
    doc = json.loads(js.read_text(encoding="ascii"))
    assert any("\ud800" in c["message"] for c in doc["cases"])


def test_unsupported_answers_are_skipped_and_listed(capsys):
    code, out = run_fixture(capsys, "--adapter", misbehaving("unsupported"))
    assert code == 0
    n_fmt9 = len(load_cases(FIXTURES, profile="v1", operations=["fmt9"]))
    assert any(line.startswith("  fmt9.v1: answered unsupported") for line in out)
    assert out[-1].endswith(f"0 failed, {n_fmt9} skipped")


def test_ops_missing_from_hello_are_skipped():
    adapter = BuiltinAdapter()
    cases = load_cases(FIXTURES, profile="v1")
    adapter.start()
    adapter.hello["ops"] = ["fmt9"]
    adapter.start = lambda timeout=0: adapter.hello  # a started adapter listing one op
    report = runner.run_cases(adapter, cases)
    skipped = [r for r in report.results if r.status == "skip"]
    assert skipped and all(r.case.operation != "fmt9" for r in skipped)
    assert all("not in the adapter's hello" in r.message for r in skipped)


def test_stderr_flood_does_not_block(capsys):
    code, out = run_fixture(capsys, "--adapter", misbehaving("flood"), "--timeout", "20")
    assert code == 0


@pytest.mark.parametrize("mode", ["bad-hello", "die-at-start", "silent"])
def test_broken_adapter_exits_2(capsys, mode):
    code, out = run_fixture(capsys, "--adapter", misbehaving(mode), "--start-timeout", "1")
    assert code == 2
    total = len(load_cases(FIXTURES, profile="v1"))
    assert out[-1] == f"0 passed, {total} failed, 0 skipped"
    assert any(line.startswith("ADAPTER BROKEN") for line in out)


def test_adapter_that_keeps_crashing_is_broken(capsys):
    code, out = run_fixture(capsys, "--adapter", misbehaving("crash-always"), "--max-restarts", "2")
    assert code == 2
    assert any("more than 2 restarts" in line for line in out)


def test_missing_command_is_broken_not_a_traceback(capsys):
    code, out = run_fixture(capsys, "--adapter", "/nonexistent/adapter --x")
    assert code == 2 and "cannot start adapter" in "\n".join(out)


@pytest.mark.parametrize(
    "args",
    [
        ["--adapter", "builtin", "--profile", "v9"],
        ["--adapter", "builtin", "--timeout", "0"],
        ["--adapter", "builtin", "--ops", "no_such_op"],
        ["--adapter", "'unbalanced"],
    ],
)
def test_usage_errors_exit_2(capsys, args):
    try:
        code = flk_main(["conformance", "vectors", "--vectors", str(FIXTURES), *args])
    except SystemExit as exc:  # an option's argparse type refused it: a usage error, exit 2
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    assert re.search(r"flk conformance( vectors)?: error:", captured.err) and "Traceback" not in captured.err


def test_missing_vectors_dir_is_usage_error(tmp_path, capsys):
    code = flk_main(["conformance", "vectors", "--adapter", "builtin", "--vectors", str(tmp_path / "none")])
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_server_suite_without_key_is_usage_error(capsys, monkeypatch):
    # the suite itself is tested in test_server_suite.py
    monkeypatch.delenv("PCS_HMAC_KEY", raising=False)
    assert flk_main(["conformance", "server", "--url", "http://127.0.0.1:1"]) == 2
    assert "--hmac-key" in capsys.readouterr().err


# -- judging and diffs -----------------------------------------------------------
def _case(result="valid", expected=None, op="canonical_bytes", flags=("f",)):
    return Case(op, "v1", 1, "c", tuple(flags), {}, result, expected)


def _ok(output):
    return Reply("ok", {"id": 1, "ok": True, "output": output})


def _err(kind):
    return Reply("ok", {"id": 1, "ok": False, "error": {"kind": kind, "message": "m"}})


def test_judge_verdicts():
    assert runner.judge(_case(expected={"valid": False}, result="invalid", op="verify_hmac"),
                        _ok({"valid": False})).status == "pass"
    assert runner.judge(_case(expected={"valid": False}, result="invalid", op="verify_hmac"),
                        _err("invalid_input")).status == "fail"
    assert runner.judge(_case(result="invalid"), _err("invalid_input")).status == "pass"
    assert runner.judge(_case(result="invalid"), _err("internal")).status == "fail"
    assert runner.judge(_case(result="invalid"), _ok({"bytes_b64": ""})).status == "fail"
    assert runner.judge(_case(expected={"text": "1"}), _err("unsupported")).status == "skip"
    assert runner.judge(_case(expected={"valid": True}), _ok({"valid": 1})).status == "fail"  # 1 is not true
    assert runner.judge(_case(expected={"x": 1.0}), _ok({"x": 1})).status == "pass"  # numbers by value
    assert runner.judge(_case(expected={"text": "a"}), _ok({})).status == "fail"


def test_canonical_bytes_failure_shows_hex_and_escaped_text():
    want = b'{"a":"\xc3\xa9"}'
    got = b'{"a":"\\u00e9"}'
    import base64

    r = runner.judge(_case(expected={"bytes_b64": base64.b64encode(want).decode()}),
                     _ok({"bytes_b64": base64.b64encode(got).decode()}))
    assert r.status == "fail"
    assert "first difference at byte 6" in r.diff
    assert "c3 a9" in r.diff and "5c 75 30 30" in r.diff
    assert "\\xc3\\xa9" in r.diff and "\\\\u00e9" in r.diff


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_byte_diff_points_at_the_first_difference(a, b):
    if a == b:
        return
    text = runner.byte_diff(a, b)
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    assert text.startswith(f"first difference at byte {i} (expected {len(a)} bytes, got {len(b)} bytes)")


# -- the f64 encoding ------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_f64_roundtrips_bit_exactly(x):
    y = decode_input({"v": [encode_f64(x)]})["v"][0]
    assert struct.pack(">d", y) == struct.pack(">d", x)


@pytest.mark.parametrize("bad", ["00", "3FF0000000000000", "zz00000000000000", 1])
def test_f64_malformed_is_invalid_input(bad):
    with pytest.raises(InvalidInput):
        decode_f64(bad)


def test_process_adapter_kill_is_idempotent():
    a = ProcessAdapter([sys.executable, "-m", "flk.conformance.adapters.python"])
    hello = a.start()
    assert hello["name"] == "flk-reference"
    a.kill()
    a.kill()
    a.close()
    assert a.call({"op": "fmt9", "profile": "v1", "input": {"x": 1}}, 1).status == "crash"


# -- the driver's bookkeeping under any sequence of adapter behaviours ---------------
BEHAVIOURS = ["pass", "wrong", "unsupported", "internal", "timeout", "crash", "malformed"]


class ScriptedAdapter:
    """Answers each call per a script; ``start`` fails when the script says so.
    (The real-process behaviours are covered above; this checks the bookkeeping.)"""

    description = "scripted"

    def __init__(self, script, start_failures):
        self.script = list(script)
        self.start_failures = list(start_failures)
        self.starts = 0
        self.closed = False

    def start(self, timeout=0.0):
        self.starts += 1
        if self.starts > 1 and self.start_failures and self.start_failures.pop(0):
            from flk.conformance.adapter_io import AdapterBroken

            raise AdapterBroken("scripted start failure")
        return {"name": "s", "version": "1", "ops": ["fmt9"], "profiles": ["v1"]}

    def call(self, request, timeout):
        b = self.script.pop(0)
        if b == "pass":
            return Reply("ok", {"id": 1, "ok": True, "output": {"text": "1.000000000"}})
        if b == "wrong":
            return Reply("ok", {"id": 1, "ok": True, "output": {"text": "2.000000000"}})
        if b in ("unsupported", "internal"):
            return Reply("ok", {"id": 1, "ok": False, "error": {"kind": b, "message": "m"}})
        return Reply(b, None, b)

    def kill(self):
        pass

    def close(self):
        self.closed = True


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=30),
    start_failures=st.lists(st.booleans(), max_size=30),
    max_restarts=st.integers(0, 5),
)
def test_driver_bookkeeping(script, start_failures, max_restarts):
    cases = [Case("fmt9", "v1", i + 1, "", ("f",), {"x": 1}, "valid", {"text": "1.000000000"})
             for i in range(len(script))]
    adapter = ScriptedAdapter(script, start_failures)
    report = runner.run_cases(adapter, cases, max_restarts=max_restarts)
    assert adapter.closed and len(report.results) == len(cases)
    p, f, s = report.counts()
    assert p + f + s == len(cases)
    assert report.summary_line() == f"{p} passed, {f} failed, {s} skipped"
    broken_at = next((i for i, r in enumerate(report.results) if r.not_run), None)
    if broken_at is not None:
        assert report.broken and all(r.not_run for r in report.results[broken_at:])
    # a run that exercised nothing (every case skipped) fails too
    assert report.exit_code == (2 if report.broken else (1 if f or not p else 0))
    assert bool(report.problems) == (not report.broken and not (p or f))
    assert report.restarts <= max_restarts + 1
    for r in report.results:
        if r.not_run:
            continue
        b = script[r.case.tc_id - 1]
        expected = {"pass": "pass", "unsupported": "skip"}.get(b, "fail")
        assert r.status == expected, (b, r)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d["testGroups"][0]["tests"][0].pop("tcId"), "tcId"),
        (lambda d: d["testGroups"][0]["tests"][0].update(result="maybe"), "result"),
        (lambda d: d.update(operation="nope"), "operation"),
    ],
)
def test_malformed_vector_file_is_a_clear_usage_error(tmp_path, capsys, mutate, words):
    doc = json.loads((FIXTURES / "fmt9.v1.json").read_text())
    mutate(doc)
    (tmp_path / "fmt9.v1.json").write_text(json.dumps(doc))
    code = flk_main(["conformance", "vectors", "--adapter", "builtin", "--vectors", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "does not follow vectors.schema.json" in err and words in err
    assert "Traceback" not in err
