"""``flk conformance server``: the black-box HTTP suite.

Positive: the suite passes against a real ``flk serve`` on SQLite, Redis and
PostgreSQL with two tenants, in single-tenant mode, and with a low TOKEN_RATE
(srv-rate-limit). Negative: a deliberately broken server (broken_server.py,
the real pipeline plus one planted bug) makes exactly the right case IDs fail,
and the same harness without a bug passes -- so a failure is the bug's.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib
import secrets
import socket
import sys
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.conformance import server_suite as ss
from flk.impl.core.errors import InvalidInput
from flk.impl.core.signing import b64decode_strict
from flk.impl.lab.cli import main as flk_main

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from broken_server import ThreadedServer, create_app  # noqa: E402

_spec = importlib.util.spec_from_file_location("flk_tests_server_proc", HERE.parent / "server" / "proc.py")
proc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(proc)

KEY_A = "conformance-alpha-key-0123456789"
KEY_B = "conformance-beta-key-9876543210"
TENANTS = f"alpha:hmac:{KEY_A},beta:hmac:{KEY_B}"
TWO_TENANTS = ("--tenant", "alpha", "--second-tenant", "beta", "--second-hmac-key", KEY_B)
ALL = set(ss.CASE_IDS)


def run_cli(capsys, tmp_path, url: str, *extra: str, key: str = KEY_A) -> tuple[int, dict, list[str]]:
    report = tmp_path / f"report-{secrets.token_hex(4)}.json"
    code = flk_main(["conformance", "server", "--url", url, "--hmac-key", key, "--json", str(report), *extra])
    out = capsys.readouterr().out.splitlines()
    doc = json.loads(report.read_text()) if report.exists() else {}
    return code, doc, out


def statuses(doc: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["cases"]}


def assert_all_pass(code: int, doc: dict, out: list[str], skipped: set[str] = frozenset()) -> None:
    st_ = statuses(doc)
    failed = {k for k, v in st_.items() if v == "fail"}
    assert not failed, "\n".join(out)
    assert {k for k, v in st_.items() if v == "skip"} == set(skipped), "\n".join(out)
    assert code == 0
    p = len(st_) - len(skipped)
    assert out[-1] == f"{p} passed, 0 failed, {len(skipped)} skipped"


def multi_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    return {"DATA_DIR": str(tmp_path / "data"), "MULTI_TENANT": "true", "TENANTS": TENANTS, **extra}


# ------------------------------------------------------------------ real flk serve, every backend
@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_server_suite_passes_flk_serve_two_tenants_and_reruns(tmp_path, capsys, backend):
    with proc.ServerProc(tmp_path, multi_env(tmp_path, DEDUP_BACKEND=backend)) as srv:
        for _ in range(2):  # a rerun against the same server: a fresh seed, no collisions
            code, doc, out = run_cli(capsys, tmp_path, srv.url, *TWO_TENANTS)
            assert_all_pass(code, doc, out, skipped={"srv-rate-limit"})
            assert set(statuses(doc)) == ALL


@pytest.mark.redis
def test_server_suite_passes_flk_serve_redis(tmp_path, capsys, redis_url):
    import redis

    ns = f"conf_{secrets.token_hex(6)}"
    env = multi_env(tmp_path, DEDUP_BACKEND="redis", REDIS_ADDR=redis_url, DEDUP_NAMESPACE=ns)
    try:
        with proc.ServerProc(tmp_path, env) as srv:
            code, doc, out = run_cli(capsys, tmp_path, srv.url, *TWO_TENANTS)
        assert_all_pass(code, doc, out, skipped={"srv-rate-limit"})
        r = redis.Redis.from_url(redis_url)
        assert list(r.scan_iter(f"flk:dedup:{ns}:*", count=1000)), "the run stored nothing under its namespace"
    finally:
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"flk:dedup:{ns}:*", count=1000))
        if keys:
            r.delete(*keys)


@pytest.mark.postgres
def test_server_suite_passes_flk_serve_postgres(tmp_path, capsys, postgres_dsn):
    import psycopg

    ns = f"conf_{secrets.token_hex(6)}"
    env = multi_env(tmp_path, DEDUP_BACKEND="postgres", POSTGRES_CONN=postgres_dsn, DEDUP_NAMESPACE=ns)
    try:
        with proc.ServerProc(tmp_path, env) as srv:
            code, doc, out = run_cli(capsys, tmp_path, srv.url, *TWO_TENANTS)
        assert_all_pass(code, doc, out, skipped={"srv-rate-limit"})
        with psycopg.connect(postgres_dsn) as conn:
            assert conn.execute(f"SELECT count(*) FROM flk_dedup_{ns}").fetchone()[0] > 0
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS flk_dedup_{ns}")


RATE_CASES = "srv-valid,srv-replay,srv-conflict,srv-unknown-tenant,srv-rate-limit"


def test_server_suite_rate_limit_single_tenant_low_token_rate(tmp_path, capsys):
    env = {"DATA_DIR": str(tmp_path / "data"), "PCS_HMAC_KEY": KEY_A, "TOKEN_RATE": "3", "DEDUP_BACKEND": "sqlite"}
    with proc.ServerProc(tmp_path, env) as srv:
        code, doc, out = run_cli(capsys, tmp_path, srv.url, "--rate-limited", "--cases", RATE_CASES)
    assert_all_pass(code, doc, out)
    assert set(statuses(doc)) == set(RATE_CASES.split(","))
    assert "429" in {c["id"]: c["message"] for c in doc["cases"]}["srv-rate-limit"]
    assert doc["summary"]["retries_429"] > 0  # the other cases honoured Retry-After


def test_server_suite_rate_limit_case_fails_when_server_is_not_limited(tmp_path, capsys):
    with ThreadedServer(create_app({"PCS_SIGN_ALG": "hmac", "PCS_HMAC_KEY": KEY_A})) as srv:
        code, doc, out = run_cli(capsys, tmp_path, srv.url, "--rate-limited", "--cases", "srv-rate-limit")
    assert code == 1
    assert statuses(doc) == {"srv-rate-limit": "fail"}
    assert "no 429" in out[-2]


# ------------------------------------------------------------------ a deliberately broken server
REPLAYS = {"srv-replay", "srv-replay-reformatted", "srv-tampered-then-valid", "srv-tampered-after-accept",
           "srv-conflict", "srv-race-fww", "srv-tenant-isolation", "srv-content-type"}
BROKEN = [
    ("no-replay-header", REPLAYS),
    # every answer cached by pcs_id, the cache consulted first: a 401/400/413 sticks to the pcs_id,
    # a conflicting payload is served the first answer instead of 409
    ("cache-before-verify", {"srv-tampered-then-valid", "srv-tampered-after-accept", "srv-conflict", "srv-race-fww",
                             "srv-schema",
                             "srv-bad-base64", "srv-unknown-tenant", "srv-duplicate-keys", "srv-oversize",
                             "srv-tenant-isolation"}),
    ("lenient-base64", {"srv-bad-base64"}),
    ("last-key-wins", {"srv-duplicate-keys"}),
    ("plain-errors", ALL - {"srv-valid", "srv-replay", "srv-replay-reformatted", "srv-content-type",
                            "srv-rate-limit"}),
    ("shared-dedup", {"srv-tenant-isolation"}),
    ("no-body-limit", {"srv-oversize"}),
    ("raw-body-digest", {"srv-replay-reformatted"}),
    ("plain-415", {"srv-content-type"}),
    ("racy-dedup", {"srv-race-fww"}),
]


def run_broken(tmp_path, capsys, bugs: frozenset[str], *extra: str, token_rate: float = 0.0):
    env = {"TENANTS": TENANTS}
    with ThreadedServer(create_app(env, bugs, token_rate=token_rate)) as srv:
        return run_cli(capsys, tmp_path, srv.url, *TWO_TENANTS, *extra)


def test_broken_server_harness_without_bugs_passes(tmp_path, capsys):
    code, doc, out = run_broken(tmp_path, capsys, frozenset())
    assert_all_pass(code, doc, out, skipped={"srv-rate-limit"})


@pytest.mark.parametrize(("bug", "expected"), BROKEN, ids=[b for b, _ in BROKEN])
def test_broken_server_fails_the_right_cases(tmp_path, capsys, bug, expected):
    code, doc, out = run_broken(tmp_path, capsys, frozenset({bug}))
    failed = {k for k, v in statuses(doc).items() if v == "fail"}
    assert failed == expected, "\n".join(out)
    assert code == 1
    assert out[-1] == f"{len(ALL) - len(expected) - 1} passed, {len(expected)} failed, 1 skipped"
    for line in out:
        if line.startswith("FAIL "):
            assert line.split()[1] in expected


def test_broken_server_429_without_retry_after_fails(tmp_path, capsys):
    code, doc, out = run_broken(tmp_path, capsys, frozenset({"no-retry-after"}), "--rate-limited",
                                "--cases", "srv-rate-limit", token_rate=2.0)
    assert code == 1
    assert statuses(doc) == {"srv-rate-limit": "fail"}
    assert "Retry-After" in out[-2]


# ------------------------------------------------------------------ CLI surface and reports
def test_cli_exit_2_when_server_unreachable(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    code = flk_main(["conformance", "server", "--url", f"http://127.0.0.1:{port}", "--hmac-key", KEY_A,
                     "--timeout", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unreachable" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--url", "ftp://x", "--hmac-key", KEY_A], "--url"),
        (["--url", "http://127.0.0.1:1"], "--hmac-key"),
        (["--url", "http://127.0.0.1:1", "--hmac-key", KEY_A, "--cases", "srv-nope"], "srv-nope"),
        (["--url", "http://127.0.0.1:1", "--hmac-key", KEY_A, "--second-tenant", "b"], "--second-hmac-key"),
        (["--url", "http://127.0.0.1:1", "--hmac-key", KEY_A, "--second-tenant", "b", "--second-hmac-key", "k"],
         "--tenant"),
        (["--url", "http://127.0.0.1:1", "--hmac-key", KEY_A, "--timeout", "0"], "--timeout"),
        (["--url", "http://127.0.0.1:1", "--hmac-key", KEY_A, "--seed", "-1"], "--seed"),
    ],
)
def test_cli_bad_arguments_exit_2(capsys, monkeypatch, argv, needle):
    monkeypatch.delenv("PCS_HMAC_KEY", raising=False)
    try:
        code = flk_main(["conformance", "server", *argv])
    except SystemExit as exc:  # an option's argparse type refused it: a usage error, exit 2
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    assert needle in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_junit_and_json_reports(tmp_path, capsys):
    junit = tmp_path / "r.xml"
    with ThreadedServer(create_app({"TENANTS": TENANTS}, frozenset({"lenient-base64"}))) as srv:
        code, doc, out = run_cli(capsys, tmp_path, srv.url, "--tenant", "alpha", "--junit", str(junit),
                                 "--seed", "12345", "--cases", "srv-valid,srv-bad-base64,srv-tenant-isolation")
    assert code == 1
    assert doc["seed"] == 12345 and doc["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "retries_429": 0}
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = {tc.get("name"): tc for tc in root.iter("testcase")}
    assert set(cases) == {"srv-valid", "srv-bad-base64", "srv-tenant-isolation"}
    assert cases["srv-bad-base64"].find("failure") is not None
    assert cases["srv-tenant-isolation"].find("skipped") is not None
    assert cases["srv-valid"].find("failure") is None
    # never a key or a signature in any report
    for text in (junit.read_text(), json.dumps(doc), "\n".join(out)):
        assert KEY_A not in text and KEY_B not in text


# ------------------------------------------------------------------ the suite's own building blocks
@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_bad_sig_variants_are_all_rejected_by_strict_base64(raw):
    sig = base64.b64encode(raw).decode()
    for what, variant in ss._bad_sig_variants(sig):
        with pytest.raises(InvalidInput):
            b64decode_strict(variant, 32)
        if what in ("non-canonical trailing bits", "newline inside", "space inside"):
            # the pitfall: a lenient decoder gets the valid signature back
            lenient = "".join(variant.split())
            assert base64.b64decode(lenient) == raw


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_tamper_sig_keeps_length_and_changes_bytes(raw):
    sig = base64.b64encode(raw).decode()
    bad = ss.tamper_sig(sig)
    assert len(bad) == len(sig) and bad != sig
    assert len(b64decode_strict(bad, 32)) == 32


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["D_hat", "r", "epoch", "budget"]),
       st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "7.0", '"x"']))
def test_with_literal_replaces_exactly_one_value(field, literal):
    pcs = ss.PcsFactory(7, b"k" * 16).fresh()
    text = ss.with_literal(pcs, field, literal).decode()
    doc = json.loads(text, parse_constant=lambda c: f"<{c}>")
    assert {k for k in doc if doc[k] != pcs[k]} <= {field}
    assert f'"{field}":{literal}' in text


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "title", "status", "detail"]),
                       st.one_of(st.text(max_size=5), st.integers(0, 600), st.booleans(), st.none()), max_size=4),
       st.sampled_from(["application/problem+json", "application/json", "", "application/problem+json; charset=utf-8"]),
       st.integers(400, 599))
def test_problem_violations_accepts_exactly_rfc9457_shapes(doc, ctype, status):
    import httpx

    ex = ss.Exchange(status, httpx.Headers({"content-type": ctype} if ctype else {}), json.dumps(doc).encode(), "x")
    good = (ctype.startswith("application/problem+json") and isinstance(doc.get("type"), str) and doc["type"] != ""
            and isinstance(doc.get("title"), str) and type(doc.get("status")) is int and doc["status"] == status)
    assert (ss.problem_violations(ex) == []) == good


def test_pcs_factory_is_seeded_and_unique():
    a, b = ss.PcsFactory(1, b"k" * 16), ss.PcsFactory(1, b"k" * 16)
    xs = [a.fresh() for _ in range(5)]
    assert [x["pcs_id"] for x in xs] == [b.fresh()["pcs_id"] for _ in range(5)]
    assert len({x["merkle_root"] for x in xs}) == 5
    assert ss.PcsFactory(2, b"k" * 16).fresh()["pcs_id"] not in {x["pcs_id"] for x in xs}


def test_readme_server_ci_job_runs_as_written(tmp_path, capsys):
    """The README's CI job is valid YAML, and its server start + suite command work as written."""
    import os
    import re
    import shlex

    import yaml

    readme = (HERE.parents[1] / "conformance" / "README.md").read_text(encoding="utf-8")
    (job,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "flk conformance server" in b]
    doc = yaml.safe_load(job)
    jobenv = doc["jobs"]["server"]["env"]
    steps = {s.get("name"): s.get("run", "") for s in doc["jobs"]["server"]["steps"]}
    start = next(r for r in steps.values() if "flk serve" in r).replace("\\\n", " ").splitlines()[0]
    suite = next(r for r in steps.values() if "flk conformance server" in r)

    def expand(text: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: jobenv[m.group(1)], text)

    words = shlex.split(expand(start))
    assert words[words.index("--port") + 1] == "8080"  # the port the suite's --url names
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
    assert words[len(env):len(env) + 2] == ["flk", "serve"]
    env["DATA_DIR"] = str(tmp_path / "srv")
    argv = shlex.split(expand(suite))
    assert argv[:3] == ["flk", "conformance", "server"]
    url = argv[argv.index("--url") + 1]
    old_cwd = os.getcwd()
    os.chdir(tmp_path)  # the job's report files land here
    try:
        with proc.ServerProc(tmp_path, env) as srv:
            argv[argv.index("--url") + 1] = srv.url
            code = flk_main(argv[1:])
    finally:
        os.chdir(old_cwd)
    out = capsys.readouterr().out.splitlines()
    assert url == "http://127.0.0.1:8080"
    assert code == 0, "\n".join(out)
    assert out[-1] == f"{len(ALL) - 1} passed, 0 failed, 1 skipped"
    assert (tmp_path / "flk-server.xml").exists() and (tmp_path / "flk-server.json").exists()
