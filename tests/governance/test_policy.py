"""Policy DSL: grammar, SemVer, invariant checks with line:column errors, compile CLI,
and `flk policy diff` on a recorded inbox WAL (dry run through the real pipeline)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.signals import budget
from flk.impl.lab.cli import main
from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.verifier import policy
from flk.impl.verifier.pipeline import Policy

from .pcsgen import KEY_B, TENANTS_TOML, body, make_pcs, sign

FULL = """\
# tighter D-hat, PII escalates instead of rejecting, budget mismatches reject
policy "strict" version 2.1.0-rc.1+build.7 {
  tolerances {
    d_hat = 0.1
    coh = 0.02
    budget = 0.005
  }
  budget { base = 0.05  alpha = 0.25  beta = 0.6  gamma = 0.3  d0 = 2.0 }
  regime { sticky_coh = 0.8  sticky_d_max = 1.4  non_sticky_d_min = 2.7 }
  anomaly { alert = 0.4  reject = 0.9 }
  escalation {
    on budget_mismatch reject 400
    on pii_detected escalate
  }
}
"""


def test_policy_default_text_compiles_to_the_verifier_default():
    c = policy.compile_policy(policy.DEFAULT_POLICY_TEXT)
    assert c.policy == Policy(version="1.0.0")
    assert c.reject_status == policy.HOOK_REASONS
    assert (c.anomaly_alert, c.anomaly_reject) == (0.5, 0.8)


def test_policy_full_example():
    c = policy.compile_policy(FULL)
    p = c.policy
    assert c.name == "strict" and p.version == "2.1.0-rc.1+build.7"
    assert (p.tol_d, p.tol_coh, p.tol_budget) == (0.1, 0.02, 0.005)
    assert (p.budget.base, p.budget.alpha, p.budget.beta, p.budget.gamma, p.budget.d0) == (0.05, 0.25, 0.6, 0.3, 2.0)
    assert (p.regime.sticky_coh, p.regime.sticky_d_max, p.regime.non_sticky_d_min) == (0.8, 1.4, 2.7)
    assert c.reject_status["budget_mismatch"] == 400 and "pii_detected" not in c.reject_status
    assert c.verifier_kwargs()["policy"] is p
    assert c.to_dict()["source_sha256"] == hashlib.sha256(FULL.encode()).hexdigest()


HEAD = 'policy "p" version 1.0.0 {\n'
ERRORS = [
    ('policy "p" version 1.0 {}', 1, 20, "SemVer"),
    ('policy "p" version 01.2.3 {}', 1, 20, "SemVer"),
    ('policy "p" version 1.2.3-01 {}', 1, 20, "not SemVer"),
    (HEAD + "  budget { alpha = 1.5 }\n}", 2, 20, "budget.alpha = 1.5 is outside [0, 1]"),
    (HEAD + "  budget { gamma = -0.1 }\n}", 2, 20, "outside"),
    (HEAD + "  budget { base = 0.5\n    alpha = 0.4 }\n}", 3, 13, "budget unbounded"),
    (HEAD + "  budget { d0 = 17 }\n}", 2, 17, "outside [0, 16]"),
    (HEAD + "  tolerances { coh = 0.06 }\n}", 2, 22, "tolerances.coh = 0.06 is outside [0, 0.05]"),
    (HEAD + "  regime { sticky_coh = 1.2 }\n}", 2, 25, "outside [0, 1.05]"),
    (HEAD + "  regime { sticky_d_max = 2.7 }\n}", 2, 27, "must be < regime.non_sticky_d_min"),
    (HEAD + "  anomaly { alert = 0.9 }\n}", 2, 21, "must be <= anomaly.reject"),
    (HEAD + "  tolerances { d_hat = 0.1\n d_hat = 0.2 }\n}", 3, 2, "set twice"),
    (HEAD + "  tolerances { wobble = 0.1 }\n}", 2, 16, "unknown setting tolerances.wobble"),
    (HEAD + "  budget { }\n  budget { }\n}", 3, 3, "appears twice"),
    (HEAD + "  escalation { on nope escalate }\n}", 2, 19, "unknown reason code 'nope'"),
    (HEAD + "  escalation { on pii_detected reject }\n}", 2, 32, "reject needs a status"),
    (HEAD + "  escalation { on pii_detected reject 402 }\n}", 2, 39, "must be 400 or 401"),
    (HEAD + "  escalation { on pii_detected escalate 400 }\n}", 2, 41, "escalate takes no status"),
    (HEAD + "  escalation { on r_out_of_bounds escalate\n on r_out_of_bounds escalate }\n}", 3, 5, "already exists"),
    (HEAD + "  budget { alpha = 1e999 }\n}", 2, 20, "not a finite number"),
    (HEAD + "  budget { alpha 0.5 }\n}", 2, 18, "expected '='"),
    (HEAD + "  budget { alpha = 0.5 ", 2, 24, "unexpected end of policy"),
    (HEAD + "  tolerances { d_hat = 0.1 } $\n}", 2, 30, "unexpected character '$'"),
    ("", 1, 1, "end of policy"),
    # a version past what a 32-bit integer holds compiled (and compared as a Python int only)
    ('policy "p" version 99999999999999999999999.0.0 {}', 1, 20, "is past 2147483647"),
    ('policy "p" version 1.2147483648.0 {}', 1, 20, "2147483648 is past 2147483647"),
    ('policy "p" version 1.0.0-rc.2147483648 {}', 1, 20, "2147483648 is past 2147483647"),
    ('policy "p" version 1.0.' + "9" * 5000 + " {}", 1, 20, "is past 2147483647"),
]


@pytest.mark.parametrize(("source", "line", "col", "needle"), ERRORS)
def test_policy_compile_errors_name_line_and_column(source, line, col, needle):
    with pytest.raises(policy.PolicyError) as ei:
        policy.compile_policy(source)
    e = ei.value
    assert needle in e.message, str(e)
    assert (e.line, e.column) == (line, col), str(e)
    assert str(e).startswith(f"{line}:{col}: ")


WEIGHT = st.floats(-0.2, 1.2, allow_nan=False).map(lambda x: round(x, 3))


@settings(max_examples=60, deadline=None)
@given(base=WEIGHT, alpha=WEIGHT, beta=WEIGHT, gamma=WEIGHT, coh_tol=st.floats(-0.01, 0.08).map(lambda x: round(x, 3)))
def test_inv_budget_bounds_policy_compiles_iff_invariants_hold(base, alpha, beta, gamma, coh_tol):
    src = (HEAD + f"  budget {{ base = {base} alpha = {alpha} beta = {beta} gamma = {gamma} }}\n"
           f"  tolerances {{ coh = {coh_tol} }}\n}}")
    ok = (all(0 <= w <= 1 for w in (base, alpha, beta, gamma)) and base + alpha + gamma <= 1 + 1e-12
          and 0 <= coh_tol <= policy.COH_EPS)
    try:
        c = policy.compile_policy(src)
    except policy.PolicyError:
        assert not ok
        return
    assert ok
    bp = c.policy.budget
    for d in (0.0, 1.0, 2.5, 16.0):  # INV-BUDGET-BOUNDS under the compiled weights
        prev_c = -1.0
        for coh in (0.0, 0.3, 0.7, 1.0):
            v = budget(d, coh, 0.5, bp)
            assert 0.0 <= v <= 1.0 and v >= prev_c
            prev_c = v
        assert budget(d, 0.5, 0.1, bp) >= budget(d, 0.5, 0.9, bp)


VERSION_NUMBER = st.one_of(st.integers(0, 2**31 + 5), st.integers(2**31 - 5, 10**30))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(major=VERSION_NUMBER, minor=VERSION_NUMBER, patch=VERSION_NUMBER, pre=st.none() | VERSION_NUMBER,
       build=st.none() | st.integers(0, 10**30))
def test_a_version_compiles_iff_each_of_its_numbers_fits_in_31_bits(major, minor, patch, pre, build):
    """MAJOR, MINOR, PATCH and a numeric pre-release identifier each at most 2^31 - 1 (build
    metadata is no number a version is compared by); past it a PolicyError at the version's
    line and column names the number."""
    version = f"{major}.{minor}.{patch}" + (f"-rc.{pre}" if pre is not None else "") + \
        (f"+b.{build}" if build is not None else "")
    numbers = [major, minor, patch] + ([pre] if pre is not None else [])
    try:
        c = policy.compile_policy(f'policy "p" version {version} {{}}')
    except policy.PolicyError as exc:
        too_big = next(n for n in numbers if n > policy.MAX_VERSION_NUMBER)
        assert (exc.line, exc.column) == (1, 20) and f"{str(too_big)[:30]}" in exc.message, str(exc)
        return
    assert max(numbers) <= policy.MAX_VERSION_NUMBER == 2**31 - 1 and c.version == version


def test_policy_compile_cli_refuses_a_version_past_31_bits(tmp_path, capsys):
    bad = tmp_path / "big.flkpol"
    bad.write_text('policy "p" version 99999999999999999999999.0.0 {}\n')
    assert main(["policy", "compile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flk policy: error: {bad}:1:20: version ") and err.count("\n") == 1, err


def test_policy_compile_cli(tmp_path, capsys):
    good = tmp_path / "p.flkpol"
    good.write_text(FULL)
    assert main(["policy", "compile", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "2.1.0-rc.1+build.7"
    assert main(["policy", "compile", str(good)]) == 0
    assert "compiles" in capsys.readouterr().out
    bad = tmp_path / "bad.flkpol"
    bad.write_text(HEAD + "  budget { alpha = 1.5 }\n}")
    assert main(["policy", "compile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:20: budget.alpha = 1.5 is outside [0, 1]" in err and "Traceback" not in err
    assert main(["policy", "compile", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert policy.compile_file(str(good)) == policy.compile_policy(FULL).policy  # what flk serve's POLICY loads
    with pytest.raises(policy.PolicyError, match="bad.flkpol:2:20"):
        policy.compile_file(str(bad))


OLD = 'policy "old" version 1.0.0 { }'
NEW = """policy "new" version 1.1.0 {
  tolerances { d_hat = 0.1 }
  escalation { on budget_mismatch reject 400  on pii_detected escalate }
}"""


def _record_wal(directory: str, worker_of=None) -> list[str]:
    """A recorded inbox WAL: what each record is meant to exercise (``worker_of(i)``: record i
    goes to that worker's log of a server data directory instead)."""
    docs = [
        ("ta", sign(make_pcs(seed=1)), "clean: 200 under both"),
        ("ta", sign(make_pcs(seed=2, d_shift=0.12)), "D-hat off by 0.12: 200 -> 202"),
        ("ta", sign(make_pcs(seed=3, budget_shift=0.05)), "budget mismatch: 202 -> 400"),
        ("ta", sign(make_pcs(seed=4, meta={"owner": "alice@example.com"})), "PII, tenant blocks: 400 -> 202 (escalated, not rejected)"),
        ("ta", sign(make_pcs(seed=1)), "duplicate of #0: replayed 200 under both"),
        ("tb", sign(make_pcs(seed=5, d_shift=0.05), KEY_B), "small D-hat drift: 200 under both"),
        ("ta", sign(make_pcs(seed=6), KEY_B), "wrong key: 401 under both"),
    ]
    logs = {}
    for i, (tenant, doc, _why) in enumerate(docs):
        where = directory if worker_of is None else os.path.join(directory, "wal", f"worker-{worker_of(i)}")
        log = logs.get(where) or logs.setdefault(where, SegmentedLog(where, segment_bytes=4096))
        log.append(encode_inbox_record(InboxRecord(tenant, 1_800_000_000.0 + i, "eu-1", body(doc))))
    for log in logs.values():
        log.sync()
        log.close()
    return [why for _t, _d, why in docs]


def _snapshot(directory: str) -> dict[str, bytes]:
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))}


def test_policy_diff_on_a_recorded_wal(tmp_path, capsys):
    wal = str(tmp_path / "wal")
    _record_wal(wal)
    before = _snapshot(wal)
    (tmp_path / "old.pol").write_text(OLD)
    (tmp_path / "new.pol").write_text(NEW)
    (tmp_path / "tenants.toml").write_text(TENANTS_TOML)
    args = ["policy", "diff", str(tmp_path / "old.pol"), str(tmp_path / "new.pol"), "--wal", wal,
            "--tenants", str(tmp_path / "tenants.toml"), "--governance", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 7 and out["dry_run"] is True
    got = {c["index"]: (c["old"]["status"], c["new"]["status"], c["new"]["reasons"]) for c in out["changes"]}
    assert got == {
        1: (200, 202, ["d_hat_mismatch"]),
        2: (202, 400, ["budget_mismatch"]),
        3: (400, 202, ["pii_detected"]),
    }, out["changes"]
    assert out["transitions"] == {"200->202": 1, "202->400": 1, "400->202": 1}
    assert _snapshot(wal) == before  # dry run: the WAL is untouched
    # without the governance hooks the PII record is accepted under both policies
    assert main(args[:-2] + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(c["index"] for c in out["changes"]) == [1, 2]
    assert main(args[:-1]) == 0
    assert "3 of 7 recorded requests would change" in capsys.readouterr().out


def test_policy_diff_over_a_servers_worker_logs_in_the_order_received(tmp_path, capsys):
    """A server's data directory: each worker's log, merged by receive time; each change names
    its log. The duplicate (#4) is in worker-0's log, its first copy (#0) in worker-1's."""
    data = str(tmp_path / "data")
    _record_wal(data, worker_of=lambda i: {0: 1, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1, 6: 0}[i])
    (tmp_path / "old.pol").write_text(OLD)
    (tmp_path / "new.pol").write_text(NEW)
    (tmp_path / "tenants.toml").write_text(TENANTS_TOML)
    args = ["policy", "diff", str(tmp_path / "old.pol"), str(tmp_path / "new.pol"), "--tenants",
            str(tmp_path / "tenants.toml"), "--governance"]
    for wal in (data, os.path.join(data, "wal")):
        assert main(args + ["--wal", wal, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["records"] == 7 and out["logs"] == ["worker-0", "worker-1"]
        got = {(c["log"], c["index"]): (c["old"]["status"], c["new"]["status"]) for c in out["changes"]}
        # the same three changes as one log gives (#1, #2, #3), each at its index in its own log
        assert got == {("worker-0", 0): (200, 202), ("worker-1", 1): (202, 400), ("worker-0", 1): (400, 202)}
    from flk.impl.lab.cli.cmd_policy import read_server_wal

    logged, notes = read_server_wal(data)
    assert [rec.received_at - 1_800_000_000.0 for _log, _i, rec in logged] == list(range(7)) and notes == []
    assert main(args + ["--wal", data]) == 0
    text = capsys.readouterr().out
    assert "3 of 7 recorded requests would change" in text and "worker-1#1 tenant=ta" in text


def test_policy_diff_limit_is_a_count_of_changes_to_list(tmp_path, capsys):
    """``--limit -1`` (or not a number) is a usage error, exit 2 (-1 was taken and listed none);
    0 lists none, N at most N."""
    wal = str(tmp_path / "wal")
    _record_wal(wal)
    (tmp_path / "old.pol").write_text(OLD)
    (tmp_path / "new.pol").write_text(NEW)
    (tmp_path / "tenants.toml").write_text(TENANTS_TOML)
    base = ["policy", "diff", str(tmp_path / "old.pol"), str(tmp_path / "new.pol"), "--wal", wal, "--tenants",
            str(tmp_path / "tenants.toml"), "--governance", "--limit"]
    for bad, why in (("-1", "must be 0 or more, got -1"), ("2.5", "not a whole number"), ("x", "not a whole number")):
        with pytest.raises(SystemExit) as exit_info:
            main(base + [bad])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"argument --limit: {why}" in err and "Traceback" not in err, err
    for limit, listed in (("0", 0), ("2", 2), ("50", 3)):
        assert main(base + [limit]) == 0
        assert sum(" tenant=" in line for line in capsys.readouterr().out.splitlines()) == listed, limit


def test_policy_diff_bad_input(tmp_path, capsys):
    (tmp_path / "old.pol").write_text(OLD)
    (tmp_path / "new.pol").write_text(NEW)
    (tmp_path / "tenants.toml").write_text(TENANTS_TOML)
    base = ["policy", "diff", str(tmp_path / "old.pol"), str(tmp_path / "new.pol"), "--tenants",
            str(tmp_path / "tenants.toml")]
    assert main(base + ["--wal", str(tmp_path / "none")]) == 2
    assert "none: no such directory" in capsys.readouterr().err  # (it said "not a directory")
    assert main(base + ["--wal", str(tmp_path / "old.pol")]) == 2
    assert "old.pol: not a directory" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    assert main(base + ["--wal", str(tmp_path / "empty")]) == 2
    assert "no WAL segments" in capsys.readouterr().err
    wal = str(tmp_path / "wal")
    _record_wal(wal)
    seg = sorted(n for n in os.listdir(wal) if n.endswith(".log"))[0]
    path = os.path.join(wal, seg)
    os.chmod(path, 0o644)
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert main(base + ["--wal", wal]) == 2
    assert "WAL damaged" in capsys.readouterr().err
