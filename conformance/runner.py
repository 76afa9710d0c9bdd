"""The vector runner: every vector through an adapter, a verdict per case, reports.

Why this module exists: an implementer needs to know *which pitfall* their
implementation hit, not just that bytes differ. For each case the runner sends
one request, judges the reply (:func:`judge`), and at the end summarises per
flag ("round-tie: 3 failed of 12") using the vector files' notes.

Verdicts: ``pass``; ``fail`` (wrong output, wrong error, accepted invalid
input, timeout, crash, malformed response); ``skip`` (the adapter does not
list the op or profile in its hello, or answers ``unsupported``); ``n/a`` (a
verify-negative whose positive control failed: the same record with a
correct signature did not verify, so "rejected" proves nothing -- counted
with the skipped). A run that exercises nothing, or an adapter that declares
no ops or profiles, fails with a message saying so; failures are diagnosed
(:mod:`flk.conformance.diagnosis`) into root causes and knock-on failures. After a
timeout or crash the adapter is killed and restarted; if it cannot be
restarted (or needs more than ``max_restarts``), it is *broken*: the remaining
cases fail with "not run" and the exit status is 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flk.impl.core import junit, signing

from . import probes
from .adapter_io import AdapterBroken, Reply
from .diagnosis import (
    Diagnosis,
    class_flags,
    describe,
    diagnose,
    format_diagnosis,
    pitfalls_of,
    summary_lines,
)
from .vectors import Case, all_notes, decode_input

BYTE_FIELDS = {"bytes_b64"}  # output fields holding base64 bytes: diffed as bytes
# The SPEC.md section and rule that decide each op's answer (quoted in failures).
SPEC_RULES = {
    "canonical_bytes": "SPEC.md section 3 (profile legacy-0.1: section 10.1): keys sorted by code point, "
                       "RFC 8785 strings in raw UTF-8, floats as fmt9, epoch a plain integer",
    "fmt9": "SPEC.md section 3.5: fixed point, nine fractional digits, half-to-even from the exact binary64 value",
    "sign_hmac": "SPEC.md section 4.1: base64(HMAC-SHA256(key, canonical bytes))",
    "verify_hmac": "SPEC.md sections 4.1, 4.3, 4.4: strict base64, any active key, constant-time compare",
    "sign_ed25519": "SPEC.md section 4.2: Ed25519 over SHA-256(canonical bytes)",
    "verify_ed25519": "SPEC.md sections 4.2-4.4: canonical S, strict base64, any active key",
    "pcs_id": "SPEC.md section 5: hex SHA-256 of merkle_root|epoch|shard_id",
    "merkle_root": "SPEC.md section 6.2 (legacy-0.1: section 10.3)",
    "d_hat": "SPEC.md section 7.2 (legacy-0.1: section 10.4): Theil-Sen median of pairwise slopes",
    "coherence": "SPEC.md section 7.3",
    "regime": "SPEC.md section 7.5",
    "budget": "SPEC.md section 7.6: left to right in binary64, no fused multiply-add, clamped to [0, 1]",
}


@dataclass
class CaseResult:
    case: Case
    status: str  # "pass" | "fail" | "skip" | "n/a" | "acceptable"
    message: str = ""
    diff: str = ""
    elapsed: float = 0.0
    output: Any = None
    not_run: bool = False  # failed because the adapter was broken before this case
    acceptance: str = ""  # an acceptable case: "accepted" (the expected output) or "rejected" (invalid_input)


@dataclass
class Report:
    adapter: str
    hello: dict
    results: list[CaseResult] = field(default_factory=list)
    broken: str = ""  # why the adapter is broken, if it is
    restarts: int = 0
    problems: list[str] = field(default_factory=list)  # run-level failures (nothing exercised ...)
    notices: list[str] = field(default_factory=list)  # run-level remarks (a declared op never exercised)

    def counts(self) -> tuple[int, int, int]:
        """(passed, failed, skipped); acceptable cases are counted apart (:meth:`acceptable`)."""
        c = Counter(r.status for r in self.results)
        return c["pass"], c["fail"], c["skip"] + c["n/a"]

    def acceptable(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "acceptable"]

    @property
    def exit_code(self) -> int:
        if self.broken:
            return 2
        return 1 if self.counts()[1] or self.problems else 0

    def diagnosis(self) -> Diagnosis:
        """The diagnosis of the failures (computed once per set of results)."""
        key = (len(self.results), sum(r.status == "fail" for r in self.results))
        if getattr(self, "_diagnosis_key", None) != key:
            judged = [r for r in self.results if not r.not_run]
            self._diagnosis = diagnose([r for r in judged if r.status == "fail"], judged)
            self._diagnosis_key = key
        return self._diagnosis

    def summary_line(self) -> str:
        p, f, s = self.counts()
        return f"{p} passed, {f} failed, {s} skipped"

    def pitfalls(self) -> list[str]:
        """The pitfalls hit, from the diagnosis (never from flags a knock-on case carries)."""
        return pitfalls_of(self.diagnosis())

    def flag_stats(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = {}
        for r in self.results:
            if r.not_run:
                continue  # a broken adapter says nothing about pitfalls
            for flag in r.case.flags:
                st = stats.setdefault(flag, {"total": 0, "run": 0, "pass": 0, "fail": 0, "skip": 0})
                st["total"] += 1
                st["skip" if r.status == "n/a" else "pass" if r.status == "acceptable" else r.status] += 1
                if r.status not in ("skip", "n/a"):
                    st["run"] += 1
        return dict(sorted(stats.items()))

    def failed_flags(self) -> list[str]:
        """Flags with failures, the most telling first: highest share of failed
        cases, then most failures, then name. A flag failing in every case that
        carries it is usually the pitfall; flags failing in a few cases are
        often collateral (a broken signature fails every signing case)."""
        stats = self.flag_stats()
        failed = [f for f, st in stats.items() if st["fail"]]
        return sorted(failed, key=lambda f: (-stats[f]["fail"] / stats[f]["run"], -stats[f]["fail"], f))


# -- diffs -------------------------------------------------------------------
def escape_bytes(b: bytes) -> str:
    """Printable ASCII as is, everything else ``\\xNN`` (backslash doubled)."""
    out = []
    for byte in b:
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def byte_diff(expected: bytes, got: bytes, context: int = 24) -> str:
    """A byte-level diff: first differing offset, hex and escaped text around it."""
    n = min(len(expected), len(got))
    i = next((k for k in range(n) if expected[k] != got[k]), n)
    lo = max(0, i - context)
    hi_e = min(len(expected), i + context)
    hi_g = min(len(got), i + context)
    lines = [f"first difference at byte {i} (expected {len(expected)} bytes, got {len(got)} bytes)"]
    pre = "..." if lo else ""
    post_e = "..." if hi_e < len(expected) else ""
    post_g = "..." if hi_g < len(got) else ""
    hex_e = expected[lo:hi_e].hex(" ")
    hex_g = got[lo:hi_g].hex(" ")
    lines.append(f"  expected hex:  {pre}{hex_e}{post_e}")
    lines.append(f"  got      hex:  {pre}{hex_g}{post_g}")
    lines.append("                 " + " " * (len(pre) + 3 * (i - lo)) + "^^")
    lines.append(f"  expected text: {pre}{escape_bytes(expected[lo:hi_e])}{post_e}")
    lines.append(f"  got      text: {pre}{escape_bytes(got[lo:hi_g])}{post_g}")
    if len(expected) <= 400 and len(got) <= 400 and (lo or post_e or post_g):
        lines.append(f"  expected full: {escape_bytes(expected)}")
        lines.append(f"  got      full: {escape_bytes(got)}")
    lines += other_differences(expected, got, i)
    return "\n".join(lines)


def difference_ranges(expected: bytes, got: bytes) -> list[tuple[int, int, int, int]]:
    """Differing stretches as (expected start, end, got start, end), found by
    matching blocks (so an inserted character does not shift every later byte)."""
    import difflib

    matcher = difflib.SequenceMatcher(None, expected, got, autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def other_differences(expected: bytes, got: bytes, first: int, limit: int = 8) -> list[str]:
    """Every differing stretch (at most ``limit``), as text, not only the first."""
    ranges = difference_ranges(expected, got)
    if len(ranges) <= 1:
        return []
    lines = [f"  all {len(ranges)} differing stretches (expected -> got):"]
    for i1, i2, j1, j2 in ranges[:limit]:
        lines.append(f"    byte {i1}: [{escape_bytes(expected[i1:i2])}] -> [{escape_bytes(got[j1:j2])}]")
    if len(ranges) > limit:
        lines.append(f"    ... and {len(ranges) - limit} more")
    return lines


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def decoded_output(output: Any) -> str:
    """The output as JSON, with base64 byte fields shown decoded beside their text."""
    text = json.dumps(output, ensure_ascii=False)[:300]
    if isinstance(output, Mapping):
        for key in BYTE_FIELDS & set(output):
            raw = _b64(output[key])
            if raw is not None:
                text += f"; {key} decoded: {escape_bytes(raw)[:400]}"
    return text


def value_diff(key: str, expected: Any, got: Any) -> str:
    if key in BYTE_FIELDS:
        eb, gb = _b64(expected), _b64(got)
        if eb is not None and gb is not None:
            return f"{key} (decoded base64): " + byte_diff(eb, gb)
    if isinstance(expected, str) and isinstance(got, str):
        return f"{key}: " + byte_diff(expected.encode("utf-8", "surrogatepass"), got.encode("utf-8", "surrogatepass"))
    return f"{key}: expected {json.dumps(expected)}, got {json.dumps(got)}"


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, everything else by type and value (true is not 1)."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b  # JSON numbers: 1 and 1.0 are the same number (JavaScript cannot tell them apart)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- judging one reply -------------------------------------------------------
def judge(case: Case, reply: Reply) -> CaseResult:
    if reply.status == "timeout":
        return CaseResult(case, "fail", f"timeout: {reply.detail}", elapsed=reply.elapsed)
    if reply.status == "crash":
        return CaseResult(case, "fail", f"crash: {reply.detail}", elapsed=reply.elapsed)
    if reply.status == "malformed":
        return CaseResult(case, "fail", f"malformed response: {reply.detail}", elapsed=reply.elapsed)
    resp = reply.response or {}
    if not resp.get("ok"):
        err = resp["error"]
        kind, msg = err["kind"], err["message"]
        if kind == "unsupported":
            return CaseResult(case, "skip", f"unsupported: {msg}", elapsed=reply.elapsed)
        if case.acceptable and kind == "invalid_input":
            return CaseResult(case, "acceptable", f"acceptable: refused ({msg})", elapsed=reply.elapsed,
                              acceptance="rejected")
        if case.expects_error:
            if kind == "invalid_input":
                return CaseResult(case, "pass", f"rejected: {msg}", elapsed=reply.elapsed)
            return CaseResult(
                case, "fail", f"expected an invalid_input error, got {kind}: {msg}", elapsed=reply.elapsed
            )
        return CaseResult(
            case,
            "fail",
            f"expected output {json.dumps(case.expected, ensure_ascii=False)}, got error {kind}: {msg}",
            elapsed=reply.elapsed,
        )
    output = resp["output"]
    if case.expects_error:
        if case.operation.startswith("verify_") and isinstance(output, Mapping) and output.get("valid") is False:
            message = ("rejected with a verdict (valid: false) where the input is malformed and must be refused "
                       "with an invalid_input error")
        elif case.operation.startswith("verify_") and isinstance(output, Mapping) and output.get("valid") is True:
            message = "accepted malformed input as validly signed (expected an invalid_input error)"
        else:
            message = "accepted invalid input (expected an invalid_input error), output " + decoded_output(output)
        return CaseResult(case, "fail", message, elapsed=reply.elapsed, output=output)
    diffs = []
    for key, want in (case.expected or {}).items():
        if key not in output:
            diffs.append(f"{key}: missing from output (expected {json.dumps(want)})")
        elif not _same(output[key], want):
            diffs.append(value_diff(key, want, output[key]))
    if diffs:
        first = diffs[0].split("\n", 1)[0]
        rule = SPEC_RULES.get(case.operation)
        if rule:
            diffs.append(f"decided by {rule}")
        return CaseResult(case, "fail", f"wrong output: {first}", "\n".join(diffs), reply.elapsed, output)
    if case.acceptable:
        return CaseResult(case, "acceptable", "acceptable: answered the expected output", elapsed=reply.elapsed,
                          output=output, acceptance="accepted")
    return CaseResult(case, "pass", elapsed=reply.elapsed, output=output)


# -- running -----------------------------------------------------------------
class CaseDriver:
    """Runs cases one at a time through an adapter, restarting it after a crash
    or timeout; used by :func:`run_cases` and the pytest plugin."""

    def __init__(self, adapter, timeout: float = 10.0, start_timeout: float = 30.0, max_restarts: int = 10) -> None:
        self.adapter = adapter
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.max_restarts = max_restarts
        self.hello: dict = {}
        self.broken = ""
        self.restarts = 0
        self.started = False
        self.controls: dict[str, tuple[bool, str]] = {}

    def start(self) -> dict:
        """Start the adapter (once); sets :attr:`broken` instead of raising."""
        if not self.started:
            self.started = True
            try:
                self.hello = dict(self.adapter.start(self.start_timeout))
            except AdapterBroken as exc:
                self.broken = str(exc)
        return self.hello

    def run(self, case: Case, control: bool = True) -> CaseResult:
        """One case; ``control=False`` for a negative whose control the caller ran."""
        self.start()
        if self.broken:
            return CaseResult(case, "fail", f"not run: adapter broken ({self.broken})", not_run=True)
        if case.operation not in self.hello.get("ops", []):
            return CaseResult(case, "skip", f"op {case.operation} not in the adapter's hello")
        if case.profile not in self.hello.get("profiles", []):
            return CaseResult(case, "skip", f"profile {case.profile} not in the adapter's hello")
        request = {"op": case.operation, "profile": case.profile, "input": case.input}
        reply = self.adapter.call(request, self.timeout)
        result = judge(case, reply)
        if control and result.status == "pass" and is_verify_negative(case):
            ok, why = self.control(case)
            if not ok:
                result.status = "n/a"
                result.message = f"not applicable: positive control failed ({why})"
        if reply.status in ("timeout", "crash"):
            self.restarts += 1
            if self.restarts > self.max_restarts:
                self.broken = f"more than {self.max_restarts} restarts"
                self.adapter.kill()
            else:
                try:
                    self.adapter.start(self.start_timeout)
                    result.message += " (adapter restarted)"
                except AdapterBroken as exc:
                    self.broken = f"restart failed: {exc}"
        return result

    def control(self, case: Case) -> tuple[bool, str]:
        """Does the adapter verify the same record with a correct signature?"""
        request = control_request(case)
        if request is None:
            return True, ""
        key = json.dumps(request, sort_keys=True)
        if key not in self.controls:
            reply = self.adapter.call(request, self.timeout)
            response = reply.response or {}
            if reply.status != "ok":
                self.controls[key] = (False, f"control {reply.status}: {reply.detail}")
            elif not response.get("ok"):
                error = response.get("error") or {}
                self.controls[key] = (False, f"control answered {error.get('kind')}: {error.get('message')}")
            elif response["output"].get("valid") is not True:
                self.controls[key] = (False, "the same record with a correct signature did not verify")
            else:
                self.controls[key] = (True, "")
        return self.controls[key]

    def close(self) -> None:
        self.adapter.close()


CONTROL_SEED = hashlib.sha256(b"flk conformance positive control").digest()


def is_verify_negative(case: Case) -> bool:
    return case.operation.startswith("verify_") and case.expected == {"valid": False}


def control_request(case: Case) -> dict | None:
    """The positive control of a verify-negative: its record, correctly signed
    (HMAC with the case's first key, Ed25519 with the runner's control key)."""
    inp = case.input if isinstance(case.input, Mapping) else {}
    try:
        subset = decode_input(inp["subset"])
        if case.operation == "verify_hmac":
            keys = [k for k in inp.get("keys_b64") or [] if isinstance(k, str) and k] or [signing.b64encode(CONTROL_SEED)]
            key = signing.b64decode_strict(keys[0], None, "key")
            sig = signing.sign_hmac(subset, key, case.profile)
            control_input = {"subset": inp["subset"], "sig": sig, "keys_b64": keys[:1]}
        else:
            sig = signing.sign_ed25519(subset, CONTROL_SEED, case.profile)
            pub = signing.b64encode(signing.public_key_bytes(CONTROL_SEED))
            control_input = {"subset": inp["subset"], "sig": sig, "public_keys_b64": [pub]}
    except Exception:  # noqa: BLE001 - a record the reference cannot sign has no control
        return None
    return {"op": case.operation, "profile": case.profile, "input": control_input}


def run_cases(
    adapter,
    cases: Sequence[Case],
    timeout: float = 10.0,
    start_timeout: float = 30.0,
    max_restarts: int = 10,
    on_result: Callable[[CaseResult], None] | None = None,
    probes: bool = True,
) -> Report:
    """Run ``cases`` through ``adapter`` (not yet started); never raises for adapter faults.
    ``probes``: after the vectors, the self-consistent base64 probes (:mod:`flk.conformance.probes`)
    of the verify ops the selection covers; their cases (ids ``verify_hmac.v1#self-N``) count like vectors."""
    driver = CaseDriver(adapter, timeout, start_timeout, max_restarts)
    driver.start()
    report = Report(adapter.description, driver.hello)
    try:
        for case in cases:
            result = driver.run(case)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
        if probes:
            _run_probes(driver, report, cases, on_result)
    finally:
        driver.close()
    report.broken = driver.broken
    report.restarts = driver.restarts
    run_checks(report, cases)
    return report


def _run_probes(driver: CaseDriver, report: Report, cases: Sequence[Case], on_result) -> None:
    """The self-consistent base64 probes (:mod:`flk.conformance.probes`) after the vectors."""
    for family in probes.wanted(cases, driver.hello):
        if driver.broken:
            return
        extra, why = probes.probe_cases(driver, family)
        if not extra:
            report.notices.append(f"self-consistent base64 probes of verify_{family} not exercised: {why}")
        for case in extra:
            result = driver.run(case, control=False)
            report.results.append(result)
            if on_result is not None:
                on_result(result)


def run_checks(report: Report, cases: Sequence[Case]) -> None:
    """Run-level verdicts: nothing declared, nothing exercised, declared ops unused."""
    if report.broken:
        return
    hello = report.hello or {}
    if not hello.get("ops") or not hello.get("profiles"):
        missing = " and ".join(k for k in ("ops", "profiles") if not hello.get(k))
        report.problems.append(
            f"the adapter declares no {missing} in its hello: list every op and profile it implements "
            "(conformance/PROTOCOL.md, hello)")
    ran = [r for r in report.results if r.status in ("pass", "fail")]
    if cases and not ran:
        report.problems.append(
            f"nothing was exercised: all {len(report.results)} case(s) were skipped or not applicable "
            "(the adapter's hello lists none of the selected ops/profiles, or it answered unsupported to all)")
    exercised = {r.case.operation for r in ran}
    selected = {c.operation for c in cases}
    for op in hello.get("ops") or []:
        if op in selected and op not in exercised:
            report.notices.append(f"declared op {op} was never exercised (every case skipped or not applicable)")


# -- text report -------------------------------------------------------------
def format_text(report: Report, verbose: bool = False) -> list[str]:
    """The human report: the summary and the diagnosis first, the details after;
    its last line is exactly ``N passed, N failed, N skipped``."""
    lines = [_adapter_line(report)]
    diagnosis = report.diagnosis()
    lines += _summary(report, diagnosis)
    lines.append("details:")
    for r in report.results:
        if r.not_run:
            continue
        if r.status == "fail":
            flags = f" [{', '.join(r.case.flags)}]" if r.case.flags else ""
            lines.append(f"FAIL {r.case.case_id}{flags} {r.case.comment}".rstrip())
            lines.append(f"     {r.message}")
            diff = r.diff.splitlines()
            if diff and r.message.endswith(diff[0]):
                diff = diff[1:]  # the message already holds the diff's first line
            lines.extend(f"     {d}" for d in diff)
        elif verbose or r.status == "acceptable":
            lines.append(f"{r.status.upper()} {r.case.case_id} {r.message}".rstrip())
    lines += _skipped_lines(report)
    lines += format_diagnosis(diagnosis)
    lines += _flag_lines(report)
    lines += _tail_lines(report)
    lines.append(report.summary_line())
    return lines


def _adapter_line(report: Report) -> str:
    h = report.hello
    if h:
        return (f"adapter: {h.get('name')} {h.get('version')} ({report.adapter}); "
                f"ops: {', '.join(h.get('ops', []))}; profiles: {', '.join(h.get('profiles', []))}")
    return f"adapter: {report.adapter}"


def _summary(report: Report, diagnosis: Diagnosis) -> list[str]:
    """The answer first: totals, one line per root cause, the pitfalls it implies."""
    p, f, s = report.counts()
    acceptable = report.acceptable()
    causes = pitfalls_of(diagnosis)
    lines = [f"summary: {p} passed, {f} failed, {s} skipped"
             + (f", {len(acceptable)} acceptable" if acceptable else "")
             + (f" -- {len(causes)} root cause(s)" if causes else "")
             + (f", {len(diagnosis.undiagnosed)} undiagnosed" if diagnosis.undiagnosed else "")]
    if report.broken:
        lines.append(f"  ADAPTER BROKEN: {report.broken}")
    if causes or diagnosis.undiagnosed:
        lines.append("root causes (reproduced byte for byte):")
        lines += summary_lines(diagnosis)
    if causes:
        lines.append(f"pitfalls hit (from the diagnosis): {', '.join(causes)}")
    if acceptable:
        by = Counter(r.acceptance for r in acceptable)
        lines.append(f"acceptable (documented tolerance, neither pass nor fail): {len(acceptable)} case(s), "
                     + ", ".join(f"{n} {how}" for how, n in sorted(by.items())))
    return lines


def _skipped_lines(report: Report) -> list[str]:
    skipped = [r for r in report.results if r.status == "skip"]
    if not skipped:
        return []
    by_reason: dict[str, list[str]] = {}
    for r in skipped:
        if r.message.startswith("op ") or r.message.startswith("profile "):
            reason = r.message
        else:
            reason = f"{r.case.operation}.{r.case.profile}: answered unsupported"
        by_reason.setdefault(reason, []).append(f"#{r.case.label or r.case.tc_id}")
    lines = ["skipped:"]
    for reason, ids in by_reason.items():
        shown = " ".join(ids[:12]) + (f" ... (+{len(ids) - 12})" if len(ids) > 12 else "")
        lines.append(f"  {reason}: {len(ids)} case(s) {shown}")
    return lines


def _flag_lines(report: Report) -> list[str]:
    stats = report.flag_stats()
    if not stats:
        return []
    notes = all_notes(r.case for r in report.results)
    lines = ["per-flag summary (failing cases carrying each flag; knock-on failures included):"]
    for f in report.failed_flags():
        st = stats[f]
        note = notes.get(f, "")
        lines.append(f"  {f}: {st['fail']} failed of {st['run']}" + (f" -- {note}" if note else ""))
    clean = [f"{f} ({st['run']})" for f, st in stats.items() if st["run"] and not st["fail"]]
    if clean:
        lines.append(f"  no failures: {', '.join(clean)}")
    unexercised = [f for f, st in stats.items() if not st["run"]]
    if unexercised:
        lines.append(f"  not exercised (every case skipped or not applicable): {', '.join(unexercised)}")
    return lines


def _tail_lines(report: Report) -> list[str]:
    lines = []
    not_run = [r for r in report.results if r.not_run]
    if not_run:
        lines.append(f"not run (adapter broken): {len(not_run)} case(s), counted as failed, from {not_run[0].case.case_id}")
    if report.restarts:
        lines.append(f"adapter restarts: {report.restarts}")
    if report.broken:
        lines.append(f"ADAPTER BROKEN: {report.broken}")
    return lines + _run_level_lines(report)


def _run_level_lines(report: Report) -> list[str]:
    lines = []
    not_applicable = [r for r in report.results if r.status == "n/a"]
    if not_applicable:
        ops = sorted({r.case.operation for r in not_applicable})
        lines.append(f"not applicable (positive control failed): {len(not_applicable)} verify-negative case(s) of "
                     f"{', '.join(ops)} -- the verifier does not accept a correctly signed record, so its "
                     "rejections prove nothing; counted with the skipped")
    lines += [f"NOTE {n}" for n in report.notices]
    lines += [f"RUN FAILED: {p}" for p in report.problems]
    return lines


# -- machine-readable reports ------------------------------------------------
def to_json(report: Report) -> dict:
    """The JSON report: the same structure as the text (summary, pitfalls, diagnosis, cases)."""
    p, f, s = report.counts()
    diagnosis = report.diagnosis()
    return {
        "adapter": report.adapter,
        "hello": report.hello,
        "broken": report.broken or None,
        "restarts": report.restarts,
        "exit_code": report.exit_code,
        "totals": {"passed": p, "failed": f, "skipped": s, "acceptable": len(report.acceptable())},
        "summary": _summary_json(diagnosis),
        "pitfalls": pitfalls_of(diagnosis),
        "flags": report.flag_stats(),
        "failed_flags": report.failed_flags(),
        "diagnosis": _diagnosis_json(diagnosis),
        "problems": report.problems,
        "notices": report.notices,
        "cases": [
            {
                "id": r.case.case_id,
                "operation": r.case.operation,
                "profile": r.case.profile,
                "tcId": r.case.tc_id,
                "file": r.case.source,
                "group": r.case.group_comment,
                "flags": list(r.case.flags),
                "comment": r.case.comment,
                "result": r.case.result,
                "status": r.status,
                "acceptance": r.acceptance or None,
                "message": r.message,
                "diff": r.diff,
                "elapsed_s": round(r.elapsed, 6),
                "not_run": r.not_run,
                "expected": r.case.expected if r.status == "fail" else None,
                "output": r.output if r.status == "fail" else None,
            }
            for r in report.results
        ],
    }


def _summary_json(diagnosis: Diagnosis) -> list[dict]:
    """One entry per root cause, as the text summary's lines."""
    out = []
    for name in pitfalls_of(diagnosis):
        title, rule = describe(name)
        out.append({"class": name, "title": title, "rule": rule, "flags": list(class_flags(name)),
                    "count": diagnosis.count(name), "example": diagnosis.examples.get(name, ""),
                    "how": diagnosis.details.get(name, [])})
    return out


def _diagnosis_json(diagnosis: Diagnosis) -> dict:
    return {
        "root_causes": [
            {"class": name, "cases": diagnosis.root_causes.get(name, []), "example": diagnosis.examples.get(name, ""),
             "knock_on": diagnosis.knock_on.get(name, []), "how": diagnosis.details.get(name, [])}
            for name in pitfalls_of(diagnosis)
        ],
        "undiagnosed": diagnosis.undiagnosed,
    }


def to_junit(report: Report) -> bytes:
    """JUnit XML: one testsuite per (operation, profile), one testcase per vector."""
    suites: dict[str, list[CaseResult]] = {}
    for r in report.results:
        suites.setdefault(f"{r.case.operation}.{r.case.profile}", []).append(r)
    out = []
    for name, results in suites.items():
        cases = []
        for r in results:
            props = {"flags": ",".join(r.case.flags)} if r.case.flags else {}
            if r.status == "acceptable":
                props["acceptable"] = r.acceptance
            cases.append(junit.Case(
                classname=f"flk.conformance.{name}",
                name=f"tc{r.case.label or r.case.tc_id}" + (f" {r.case.comment}" if r.case.comment else ""),
                time=r.elapsed, properties=props,
                failure=r.message if r.status == "fail" else None, failure_type="mismatch", text=r.diff or r.message,
                skipped=r.message if r.status in ("skip", "n/a") else None))
        out.append(junit.Suite(name, cases))
    return junit.document(f"flk conformance vectors: {report.adapter}", out)


def flag_summary(report: Report) -> Mapping[str, str]:
    """``{flag: "3 failed of 12"}`` for the flags with failures."""
    return {f: f"{st['fail']} failed of {st['run']}" for f, st in report.flag_stats().items() if st["fail"]}
