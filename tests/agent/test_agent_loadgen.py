"""Load generator and ``flk agent submit`` / ``load`` / ``tenants-env``.

The plan is checked against the real verify pipeline (flk.impl.verifier.pipeline with
its tenant registry parsed from our own ``TENANTS`` string), the runner
against real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
from collections import Counter

import jsonschema
import pytest
from agent_ports import dead_url
from agent_scripted_server import MiniVerifier, ScriptedServer
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import builder as agent
from flk.impl.agent import loadgen
from flk.impl.agent.client import RetryPolicy
from flk.impl.core.canonical import canonical_bytes
from flk.impl.core.errors import InvalidInput
from flk.impl.core.signing import verify_hmac
from flk.impl.dedup.memory import MemoryStore
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import Request, Verifier, run_sync
from flk.impl.verifier.tenants import parse_tenants_env

BASE = b"loadgen-base-secret"
SCHEMA_DOC = json.loads((pathlib.Path(__file__).resolve().parents[2] / "spec" / "pcs.schema.json").read_text())
SCHEMA = jsonschema.validators.validator_for(SCHEMA_DOC)(SCHEMA_DOC)
FAST = RetryPolicy(base=0.001, cap=0.01, max_attempts=4, max_retry_after=1.0)


def keys_for(k: int) -> dict[str, bytes]:
    return {t: loadgen.signing_key(BASE, t, k) for t in loadgen.tenant_ids(k)}


# ----------------------------------------------------------------------------- plan


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 120), seed=st.integers(0, 2**32), k=st.integers(1, 4),
       rates=st.tuples(st.floats(0, 0.3), st.floats(0, 0.3), st.floats(0, 0.3)))
def test_inv_tenant_isolation_plan_is_deterministic_and_each_kind_is_what_it_claims(n, seed, k, rates):
    cfg = loadgen.PlanConfig(n=n, seed=seed, tenants=k, dup_rate=rates[0], bad_sig_rate=rates[1],
                             conflict_rate=rates[2])
    items = loadgen.make_plan(cfg, BASE)
    again = loadgen.make_plan(cfg, BASE)
    assert [(i.kind, i.tenant, i.digest, i.pcs) for i in items] == \
        [(i.kind, i.tenant, i.digest, i.pcs) for i in again]
    keys = keys_for(k)
    valid_by_id = {}
    for it in items:
        assert not list(SCHEMA.iter_errors(it.pcs))  # every kind is well-formed on the wire
        assert it.tenant in keys
        signed_ok = verify_hmac(it.pcs, it.pcs["sig"], [keys[it.tenant]])
        assert it.digest == __import__("hashlib").sha256(canonical_bytes(it.pcs)).hexdigest()
        if it.kind == "valid":
            assert signed_ok and it.pcs["pcs_id"] not in valid_by_id
            valid_by_id[it.pcs["pcs_id"]] = it
        elif it.kind == "bad_sig":
            assert not signed_ok
        elif it.kind == "dup":
            orig = valid_by_id[it.pcs["pcs_id"]]
            assert signed_ok and it.digest == orig.digest and it.tenant == orig.tenant
        else:
            orig = valid_by_id[it.pcs["pcs_id"]]
            assert signed_ok and it.digest != orig.digest and it.tenant == orig.tenant
    # other tenants' keys never verify (INV-TENANT-ISOLATION from the client side)
    for it in items:
        for t, key in keys.items():
            if t != it.tenant and k > 1:
                assert not verify_hmac(it.pcs, it.pcs["sig"], [key])


def test_plan_seed_changes_everything():
    a = loadgen.make_plan(loadgen.PlanConfig(n=50, seed=1, dup_rate=0.2), BASE)
    b = loadgen.make_plan(loadgen.PlanConfig(n=50, seed=2, dup_rate=0.2), BASE)
    assert not {i.digest for i in a} & {i.digest for i in b}


def test_plan_kinds_get_the_expected_answers_from_the_real_verify_pipeline():
    """Every item, run through flk.impl.verifier.pipeline with the tenants of our own
    TENANTS string: valid -> 200 (no signal reasons), dup -> replay, bad_sig ->
    401, conflict -> 409."""
    k = 3
    cfg = loadgen.PlanConfig(n=400, seed=11, tenants=k, dup_rate=0.15, bad_sig_rate=0.1,
                             conflict_rate=0.1)
    items = loadgen.make_plan(cfg, BASE)
    verifier = Verifier(parse_tenants_env(loadgen.tenants_env(BASE, k)))
    wal, store = MemoryWal(), MemoryStore()
    seen = Counter()
    for n, it in enumerate(items):
        body = json.dumps(dict(it.pcs, attempt=1, sent_at="2026-01-01T00:00:00Z")).encode()
        resp = run_sync(verifier.handle(Request(body, it.tenant), 1000.0 + n), wal, store)
        replay = resp.header("Idempotent-Replayed") == "true"
        seen[(it.kind, resp.status, replay)] += 1
        assert resp.status in loadgen.EXPECTED[it.kind], (it.kind, resp.status, resp.body[:200])
        if it.kind == "valid":
            assert resp.status == 200 and not replay, resp.body[:300]
        if it.kind == "dup":
            assert replay
    assert {kind for kind, _, _ in seen} == set(loadgen.KINDS)


@pytest.mark.parametrize("k", [1, 3])
def test_ed25519_tenants_plan_through_the_real_verify_pipeline(k):
    """--sign-alg ed25519: every kind still gets its answer, with the public keys
    listed by tenants_env; the derived seeds differ per tenant."""
    cfg = loadgen.PlanConfig(n=80, seed=12, tenants=k, dup_rate=0.15, bad_sig_rate=0.15,
                             conflict_rate=0.15, sign_alg="ed25519")
    items = loadgen.make_plan(cfg, BASE)
    env = loadgen.tenants_env(BASE, k, "ed25519")
    assert all(part.split(":")[1] == "ed25519" for part in env.split(","))
    verifier = Verifier(parse_tenants_env(env))
    wal, store = MemoryWal(), MemoryStore()
    kinds = set()
    for n, it in enumerate(items):
        assert it.pcs["sig_alg"] == "ed25519"
        body = json.dumps(dict(it.pcs, attempt=1)).encode()
        resp = run_sync(verifier.handle(Request(body, it.tenant), 1000.0 + n), wal, store)
        assert resp.status in loadgen.EXPECTED[it.kind], (it.kind, resp.status, resp.body[:200])
        kinds.add(it.kind)
    assert kinds == set(loadgen.KINDS)
    seeds = {loadgen.tenant_signer(BASE, t, k, "ed25519").key for t in loadgen.tenant_ids(k)}
    assert len(seeds) == k


def test_tenants_env_round_trips_through_the_server_parser():
    for k in (1, 2, 5):
        reg = parse_tenants_env(loadgen.tenants_env(BASE, k))
        assert sorted(reg.ids()) == loadgen.tenant_ids(k)
        for t in loadgen.tenant_ids(k):
            assert reg.resolve(t).active_keys(0.0) == [loadgen.signing_key(BASE, t, k)]
    assert loadgen.signing_key(BASE, "default", 1) == BASE
    assert len({loadgen.signing_key(BASE, t, 3) for t in loadgen.tenant_ids(3)}) == 3


@pytest.mark.parametrize("kwargs,field", [
    ({"n": -1}, "n"), ({"tenants": 0}, "tenants"), ({"dup_rate": 1.5}, "dup_rate"),
    ({"dup_rate": 0.6, "conflict_rate": 0.6}, "dup_rate"), ({"seed": -3}, "seed"),
])
def test_plan_config_rejects_bad_input(kwargs, field):
    with pytest.raises(InvalidInput) as exc:
        loadgen.PlanConfig(**{"n": 10, "seed": 1, **kwargs})
    assert exc.value.field == field


# ----------------------------------------------------------------------------- runner


def test_run_load_against_a_real_server_writes_a_complete_history(tmp_path):
    k = 2
    items = loadgen.make_plan(loadgen.PlanConfig(n=300, seed=5, tenants=k, dup_rate=0.2,
                                                 bad_sig_rate=0.1, conflict_rate=0.1), BASE)
    hist = tmp_path / "history.jsonl"
    err = io.StringIO()
    with MiniVerifier(keys_for(k)) as srv:
        res = loadgen.run_load(items, [srv.url], concurrency=4, seed=5, history_path=str(hist),
                               progress=True, progress_stream=err, policy=FAST)
    s = res.summary()
    assert s["items"] == 300 and s["sent"] == 300 and s["retries"] == 0
    assert s["unexpected"] == 0
    kinds = Counter(i.kind for i in items)
    assert {kk: sum(v.values()) for kk, v in s["by_kind"].items() if v} == dict(kinds)
    assert s["by_status"].get("401") == kinds["bad_sig"]
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] <= s["latency_ms"]["p99"]
    lines = [json.loads(x) for x in hist.read_text().splitlines()]
    assert len(lines) == 300 and all(x["final"] and x["attempt"] == 1 for x in lines)
    assert sorted(x["item"] for x in lines) == list(range(300))
    by_item = {x["item"]: x for x in lines}
    for it in items:
        h = by_item[it.index]
        assert (h["kind"], h["tenant"], h["pcs_id"], h["digest"]) == \
            (it.kind, it.tenant, it.pcs["pcs_id"], it.digest)
        assert h["t_send"] <= h["t_recv"] and h["latency_s"] >= 0
        if h["status"] == 200:
            assert h["replay"] is True
    text = hist.read_text()
    assert all(it.pcs["sig"] not in text for it in items)
    assert BASE.decode() not in text
    assert "items" in err.getvalue() and "300/300" in err.getvalue()


def test_run_load_fails_over_and_honours_retry_after(tmp_path):
    """One 429 (Retry-After: 1) and one 503 among 202s, half the items starting on a dead URL.
    Which item gets which answer depends on how the two workers interleave, so the attempt budget
    covers the worst one: an item starting on the dead URL that gets both the 429 and the 503 takes
    dead, 429, 503, dead, 202 = 5 attempts (with FAST's 4 it gave up once in a full run). The
    jittered Retry-After wait is in [1, 2] s (max_retry_after 3 leaves room above the floor)."""
    items = loadgen.make_plan(loadgen.PlanConfig(n=40, seed=8), BASE)
    hist = tmp_path / "h.jsonl"
    policy = RetryPolicy(base=0.001, cap=0.01, max_attempts=5, max_retry_after=3.0)
    script = [(429, {"retry-after": "1"}, b""), (503, {}, b"")] + [(202, {}, b"{}")] * 200
    with ScriptedServer(script) as srv:
        res = loadgen.run_load(items, [dead_url(), srv.url], concurrency=2, seed=8,
                               history_path=str(hist), policy=policy, timeout=2.0)
    s = res.summary()
    assert s["outcomes"] == {"ack": 40}
    lines = [json.loads(x) for x in hist.read_text().splitlines()]
    throttled = [x for x in lines if x["status"] == 429]
    assert len(throttled) == 1
    again = next(x for x in lines if x["item"] == throttled[0]["item"] and x["attempt"] == throttled[0]["attempt"] + 1)
    assert again["t_send"] >= throttled[0]["t_recv"] + 1.0 - 1e-3  # Retry-After honoured (never earlier)
    errors = [x for x in lines if x["status"] is None]
    assert errors and all(x["error"] and not x["final"] for x in errors)
    assert s["by_status"]["error"] == len(errors) and s["by_status"]["429"] == 1
    assert s["retries"] == len(lines) - 40
    # retries of one item always carry the same signed subset (same digest recorded)
    for i in range(40):
        mine = [x for x in lines if x["item"] == i]
        assert [x["attempt"] for x in mine] == list(range(1, len(mine) + 1))
        assert mine[-1]["final"] and mine[-1]["status"] == 202


def test_run_load_paces_with_rate():
    items = loadgen.make_plan(loadgen.PlanConfig(n=30, seed=1), BASE)
    with MiniVerifier(keys_for(1)) as srv:
        res = loadgen.run_load(items, [srv.url], concurrency=8, rate=100.0, seed=1)
    assert res.elapsed_s >= 0.28  # 30 items at 100/s: the last starts at 0.29 s
    assert res.summary()["unexpected"] == 0


# ----------------------------------------------------------------------------- CLI


def _flk(args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "flk.impl", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cli_load_json_summary_and_history(tmp_path):
    k = 3
    hist = tmp_path / "h.jsonl"
    with MiniVerifier(keys_for(k)) as srv:
        proc = _flk(["agent", "load", "--url", srv.url, "--n", "120", "--seed", "4", "--tenants", str(k),
                     "--dup-rate", "0.1", "--bad-sig-rate", "0.1", "--conflict-rate", "0.1",
                     "--concurrency", "4", "--history", str(hist), "--json", "--strict",
                     "--hmac-key-env", "LG_BASE"], {"LG_BASE": BASE.decode()})
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["items"] == 120 and s["unexpected"] == 0 and s["throughput_rps"] > 0
    assert len(hist.read_text().splitlines()) == s["sent"]
    assert "120/120" in proc.stderr and "Traceback" not in proc.stderr
    assert BASE.decode() not in proc.stdout + proc.stderr + hist.read_text()


def test_cli_load_strict_exits_1_when_the_server_misbehaves():
    with ScriptedServer([(202, {}, b"{}")]) as srv:  # accepts bad signatures too
        proc = _flk(["agent", "load", "--url", srv.url, "--n", "30", "--seed", "1", "--bad-sig-rate",
                     "0.5", "--strict", "--no-progress"], {"PCS_HMAC_KEY": "x"})
    assert proc.returncode == 1, proc.stderr
    assert "unexpected" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("args,env,needle", [
    (["--n", "5", "--seed", "1"], {"PCS_HMAC_KEY": ""}, "PCS_HMAC_KEY"),
    (["--n", "-5", "--seed", "1"], {"PCS_HMAC_KEY": "k"}, "n:"),
    (["--n", "5", "--seed", "1", "--dup-rate", "2"], {"PCS_HMAC_KEY": "k"}, "--dup-rate"),
    (["--n", "5", "--seed", "1", "--concurrency", "0"], {"PCS_HMAC_KEY": "k"}, "concurrency"),
    (["--n", "5", "--seed", "1", "--rate", "-1"], {"PCS_HMAC_KEY": "k"}, "rate"),
    (["--n", "5", "--seed", "1", "--rate", "nan"], {"PCS_HMAC_KEY": "k"}, "rate"),
    (["--n", "5", "--seed", "1", "--timeout", "nan"], {"PCS_HMAC_KEY": "k"}, "timeout"),
    (["--n", "5", "--seed", "1", "--backoff-cap", "inf"], {"PCS_HMAC_KEY": "k"}, "cap"),
])
def test_cli_load_bad_input_exit_2(args, env, needle):
    proc = _flk(["agent", "load", "--url", "http://127.0.0.1:9", *args], env)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_output_paths_exit_2(tmp_path):
    proc = _flk(["agent", "load", "--url", "http://127.0.0.1:9", "--n", "1", "--seed", "1", "--history",
                 str(tmp_path / "missing" / "h.jsonl")], {"PCS_HMAC_KEY": "k"})
    assert proc.returncode == 2 and "history" in proc.stderr and "Traceback" not in proc.stderr
    pcs = agent.build_pcs([[1.0]], b"a", "s", 1, agent.Signer("hmac", b"k"))
    (tmp_path / "p.json").write_text(json.dumps(pcs))
    proc = _flk(["agent", "submit", "--url", "http://127.0.0.1:9", "--pcs", str(tmp_path / "p.json"),
                 "--dlq", str(tmp_path / "missing" / "d.jsonl")])
    assert proc.returncode == 2 and "--dlq" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_load_zero_items_is_an_empty_summary():
    proc = _flk(["agent", "load", "--url", "http://127.0.0.1:9", "--n", "0", "--seed", "1", "--json"],
                {"PCS_HMAC_KEY": "k"})
    assert proc.returncode == 0 and json.loads(proc.stdout)["sent"] == 0


def test_cli_load_bad_url_exit_2():
    proc = _flk(["agent", "load", "--url", "ftp://x", "--n", "5", "--seed", "1"], {"PCS_HMAC_KEY": "k"})
    assert proc.returncode == 2 and "url" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_tenants_env_matches_the_plan():
    proc = _flk(["agent", "tenants-env", "--tenants", "3"], {"PCS_HMAC_KEY": BASE.decode()})
    assert proc.returncode == 0
    line = proc.stdout.strip()
    assert line.startswith("TENANTS=") and line[len("TENANTS="):] == loadgen.tenants_env(BASE, 3)


def test_cli_submit_pcs_file_with_dlq_and_failover(tmp_path):
    signer = agent.Signer("hmac", b"k")
    good = agent.build_pcs([[1.0, 2.0], [3.0, 1.0]], b"a", "s", 1, signer)
    other = agent.build_pcs([[1.0, 2.0], [3.0, 5.0]], b"b", "s", 2, signer)
    pcs_file = tmp_path / "pcs.jsonl"
    pcs_file.write_text(json.dumps(good) + "\n" + json.dumps(other) + "\n")
    dlq = tmp_path / "dlq.jsonl"
    with ScriptedServer([(202, {}, b"{}"), (422, {"content-type": "application/problem+json"},
                                             b'{"title":"unprocessable"}')]) as srv:
        proc = _flk(["agent", "submit", "--url", dead_url(), "--url", srv.url, "--pcs", str(pcs_file),
                     "--dlq", str(dlq), "--json", "--tenant", "acme"])
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["outcomes"] == {"ack": 1, "dead_letter": 1} and s["records"] == 2
    rec = json.loads(dlq.read_text())
    assert rec["pcs_id"] == other["pcs_id"] and rec["status"] == 422 and rec["tenant"] == "acme"
    assert other["sig"] not in dlq.read_text() + proc.stderr
    assert [r["headers"]["x-tenant-id"] for r in srv.requests] == ["acme", "acme"]


def test_cli_submit_gives_up_exit_1_and_bad_file_exit_2(tmp_path):
    pcs = agent.build_pcs([[1.0]], b"a", "s", 1, agent.Signer("hmac", b"k"))
    f = tmp_path / "p.json"
    f.write_text(json.dumps(pcs))
    with ScriptedServer([(500, {}, b"")]) as srv:
        proc = _flk(["agent", "submit", "--url", srv.url, "--pcs", str(f), "--max-attempts", "2",
                     "--backoff-base", "0.001", "--backoff-cap", "0.002", "--dlq", str(tmp_path / "d")])
    assert proc.returncode == 1 and "gave_up" in proc.stdout
    assert not (tmp_path / "d").exists()  # given up is not dead-lettered: it stays pending
    (tmp_path / "bad.json").write_text("{nope")
    proc = _flk(["agent", "submit", "--url", "http://127.0.0.1:9", "--pcs", str(tmp_path / "bad.json")])
    assert proc.returncode == 2 and "not JSON" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "unsigned.json").write_text(json.dumps({k: v for k, v in pcs.items() if k != "sig"}))
    proc = _flk(["agent", "submit", "--url", "http://127.0.0.1:9", "--pcs",
                 str(tmp_path / "unsigned.json")])
    assert proc.returncode == 2 and "sig" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_loadgen_quick_runs_and_reports_its_figures():
    """Not a speed assertion (that is `flk bench loadgen`): the benchmark runs and
    every request reached the sink."""
    proc = _flk(["bench", "loadgen", "--quick", "--repeat", "1", "--json"])
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["loadgen_rps"] > 0 and figures["plan_pcs_per_s"] > 0
    assert figures["n_per_run"] == 4000


def test_run_load_failover_mode_stays_on_the_primary_until_it_fails():
    items = loadgen.make_plan(loadgen.PlanConfig(n=20, seed=3), BASE)
    a_script = [(202, {}, b"{}")] * 5 + [(503, {}, b"")]
    with ScriptedServer(a_script) as a, ScriptedServer([(202, {}, b"{}")]) as b:
        res = loadgen.run_load(items, [a.url, b.url], concurrency=1, seed=3, policy=FAST,
                               url_mode="failover")
        assert len(a.requests) == 6  # 5 answered, then the 503 that moved this worker to b
        assert len(b.requests) == 15
    assert res.summary()["outcomes"] == {"ack": 20} and res.retries == 1
    with ScriptedServer([(202, {}, b"{}")]) as a, ScriptedServer([(202, {}, b"{}")]) as b:
        loadgen.run_load(items, [a.url, b.url], concurrency=1, seed=3, url_mode="spread")
        assert len(a.requests) == len(b.requests) == 10
    with pytest.raises(InvalidInput):
        loadgen.run_load(items, [a.url], url_mode="random")


def test_item_latency_counts_lag_behind_the_schedule(tmp_path):
    """With --rate, a server too slow for the schedule shows in item latency (due ->
    answered), not only in request latency: no coordinated omission."""
    items = loadgen.make_plan(loadgen.PlanConfig(n=20, seed=2), BASE)
    hist = tmp_path / "h.jsonl"
    with ScriptedServer([(202, {}, b"{}")]) as srv:
        srv.delay = 0.05
        res = loadgen.run_load(items, [srv.url], concurrency=1, rate=100.0, seed=2, history_path=str(hist))
    s = res.summary()
    # Load-independent bounds: 20 items are due within 0.19 s but served one at a time at
    # >= 50 ms each, so the last is answered >= 1.0 s after the start, >= 0.8 s after it was
    # due. A generator that measured only request latency (coordinated omission) would report
    # ~50 ms. Machine load can only make item latency larger, never smaller.
    assert s["item_latency_ms"]["p99"] >= 750
    assert s["item_latency_ms"]["p99"] > s["latency_ms"]["p99"]
    lines = sorted((json.loads(x) for x in hist.read_text().splitlines()), key=lambda x: x["item"])
    assert max(x["t_recv"] - x["t_sched"] for x in lines) >= 0.75  # the same bound, from the history
    due = [x["t_sched"] for x in lines]
    assert all(abs((b - a) - 0.01) < 1e-3 for a, b in zip(due, due[1:], strict=False))
    assert all(x["t_send"] >= x["t_sched"] - 1e-3 for x in lines)
    with ScriptedServer([(202, {}, b"{}")]) as srv:
        loadgen.run_load(items[:3], [srv.url], concurrency=1, seed=2, history_path=str(hist))
    assert all(json.loads(x)["t_sched"] is None for x in hist.read_text().splitlines())
