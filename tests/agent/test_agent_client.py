"""Submit client: the sans-I/O retry machine and its httpx driver.

Server-facing behaviour (DLQ, Retry-After, conflict, failover) runs against a
real HTTP server on 127.0.0.1 (tests/agent/agent_scripted_server.py); the schedule
bounds and "retries never change the signed bytes" are Hypothesis properties
of the state machine, checked again on the bytes the server received.
"""

from __future__ import annotations

import json
import logging
import pathlib
import random
import re
import socket
import time

import jsonschema
import pytest
from agent_scripted_server import PROBLEM, MiniVerifier, ScriptedServer
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import builder as agent
from flk.impl.agent.client import (
    DeadLetterFile,
    Done,
    HttpAnswer,
    RetryPolicy,
    Send,
    Submission,
    SubmitClient,
    TransportFailure,
    Wait,
    backoff_ceiling,
    parse_retry_after,
    submit_url,
    wait_bound,
)
from flk.impl.core.canonical import canonical_bytes
from flk.impl.core.errors import InvalidInput

KEY = b"client-test-key"
_SCHEMA_DOC = json.loads((pathlib.Path(__file__).resolve().parents[2] / "spec" / "pcs.schema.json").read_text())
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
SCHEMA = jsonschema.validators.validator_for(_SCHEMA_DOC)(_SCHEMA_DOC)
PCS = agent.build_pcs([[0.1, 0.2], [0.5, 0.9], [0.3, 0.3]], b"raw stream bytes", "shard-1", 7,
                      agent.Signer("hmac", KEY), seed=3)
OK = (200, {"content-type": "application/json"}, b"{}")
FAST = RetryPolicy(base=0.01, cap=0.05, max_attempts=5, max_retry_after=5.0)


class Recorder:
    def __init__(self):
        self.delays = []

    def __call__(self, d):
        self.delays.append(d)


def free_port_with_nothing_listening() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def signed_of(req) -> bytes:
    return canonical_bytes(json.loads(req["body"]))


# ----------------------------------------------------------------------------- real server


def test_ack_on_202_sends_once_with_tenant_header():
    with ScriptedServer([(202, {}, b"{}")]) as srv:
        client = SubmitClient([srv.url], tenant="acme", sleep=Recorder())
        done = client.submit(PCS)
    assert done.outcome == "ack" and done.status == 202 and done.acked
    assert len(srv.requests) == 1
    req = srv.requests[0]
    assert req["path"] == "/v1/pcs/submit"
    assert req["headers"]["x-tenant-id"] == "acme"
    assert req["headers"]["content-type"] == "application/json"
    body = json.loads(req["body"])
    assert body["attempt"] == 1 and isinstance(body["sent_at"], str)
    assert body["sent_at"].endswith("Z") and body["sent_at"][:2] == "20"
    assert {k: v for k, v in body.items() if k not in ("attempt", "sent_at")} == PCS


def test_retry_after_on_429_is_honoured_in_real_time():
    """429 + Retry-After: 1 -> the next request arrives at least 1 s later; same bytes."""
    with ScriptedServer([(429, {"retry-after": "1", **PROBLEM}, b'{"title":"slow down"}'), OK]) as srv:
        client = SubmitClient([srv.url], policy=FAST)
        done = client.submit(PCS)
    assert done.outcome == "ack" and done.attempts == 2
    t0, t1 = srv.requests[0]["t"], srv.requests[1]["t"]
    assert t1 - t0 >= 0.95
    assert signed_of(srv.requests[0]) == signed_of(srv.requests[1]) == canonical_bytes(PCS)
    assert [json.loads(r["body"])["attempt"] for r in srv.requests] == [1, 2]
    assert client.stats.retries == 1


def test_retry_after_on_503_http_date_single_url():
    when = time.time() + 30
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    with ScriptedServer([(503, {"retry-after": date}, b""), (503, {"retry-after": "2"}, b""), OK]) as srv:
        rec = Recorder()
        done = SubmitClient([srv.url], policy=FAST, sleep=rec).submit(PCS)
    assert done.outcome == "ack" and len(srv.requests) == 3
    # the date is clamped to max_retry_after (5 s); the delta-seconds form is waited in full
    assert 4.0 <= rec.delays[0] <= 5.0
    assert rec.delays[1] >= 2.0


def test_400_goes_to_dead_letter_file_without_payload_and_is_not_retried(tmp_path, caplog):
    dlq = tmp_path / "dlq.jsonl"
    with ScriptedServer([(400, PROBLEM, b'{"title":"schema violation","type":"about:blank"}')]) as srv:
        client = SubmitClient([srv.url], tenant="t1", policy=FAST, dead_letter=DeadLetterFile(str(dlq)),
                              sleep=Recorder())
        with caplog.at_level(logging.INFO, logger="flk.agent.client"):
            done = client.submit(PCS)
    assert done.outcome == "dead_letter" and done.acked and done.status == 400
    assert len(srv.requests) == 1
    lines = dlq.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["pcs_id"] == PCS["pcs_id"] and rec["status"] == 400 and rec["tenant"] == "t1"
    assert "schema violation" in rec["reason"]
    text = dlq.read_text() + caplog.text
    assert PCS["sig"] not in text and PCS["merkle_root"] not in text and "v_star" not in text


@pytest.mark.parametrize("status", [401, 403, 404, 413, 422])
def test_other_4xx_dead_letter(tmp_path, status):
    dlq = tmp_path / "dlq.jsonl"
    with ScriptedServer([(status, {}, b"")]) as srv:
        done = SubmitClient([srv.url], policy=FAST, dead_letter=DeadLetterFile(str(dlq)),
                            sleep=Recorder()).submit(PCS)
    assert done.outcome == "dead_letter" and len(srv.requests) == 1
    assert json.loads(dlq.read_text())["status"] == status


def test_409_is_a_logged_conflict_and_ends_the_record(caplog):
    with ScriptedServer([(409, PROBLEM, b'{"title":"conflict"}')]) as srv:
        client = SubmitClient([srv.url], policy=FAST, sleep=Recorder())
        with caplog.at_level(logging.WARNING, logger="flk.agent.client"):
            done = client.submit(PCS)
    assert done.outcome == "conflict" and done.acked and len(srv.requests) == 1
    assert "conflict" in caplog.text and PCS["pcs_id"] in caplog.text
    assert PCS["sig"] not in caplog.text
    assert client.stats.conflicts == 1


def test_failover_from_dead_url_to_live_one_and_stick_there():
    dead = f"http://127.0.0.1:{free_port_with_nothing_listening()}"
    with ScriptedServer([OK]) as srv:
        rec = Recorder()
        client = SubmitClient([dead, srv.url], policy=FAST, sleep=rec)
        first = client.submit(PCS)
        second = client.submit(PCS)
    assert first.outcome == "ack" and first.attempts == 2 and first.url.startswith(srv.url)
    assert rec.delays == []  # failover to an untried URL is immediate
    assert second.attempts == 1  # the client sticks to the URL that answered
    assert len(srv.requests) == 2


def test_failover_on_503_between_two_real_servers_with_same_signed_bytes():
    with ScriptedServer([(503, {}, b"")]) as a, ScriptedServer([(500, {}, b""), OK]) as b:
        rec = Recorder()
        done = SubmitClient([a.url, b.url], policy=FAST, sleep=rec).submit(PCS)
    # a:503 -> b:500 (immediate failover) -> backoff -> a:503 -> b:200
    assert done.outcome == "ack" and done.attempts == 4
    assert len(a.requests) == 2 and len(b.requests) == 2
    assert len(rec.delays) == 1
    reqs = sorted(a.requests + b.requests, key=lambda r: r["t"])
    assert {signed_of(r) for r in reqs} == {canonical_bytes(PCS)}
    assert [json.loads(r["body"])["attempt"] for r in reqs] == [1, 2, 3, 4]


def test_gives_up_after_max_attempts_and_does_not_ack():
    with ScriptedServer([(500, {}, b"")]) as srv:
        rec = Recorder()
        done = SubmitClient([srv.url], policy=FAST, sleep=rec).submit(PCS)
    assert done.outcome == "gave_up" and not done.acked
    assert len(srv.requests) == FAST.max_attempts
    assert len(rec.delays) == FAST.max_attempts - 1
    assert all(0 <= d <= backoff_ceiling(FAST, k) for k, d in enumerate(rec.delays))


def test_mini_verifier_replay_and_conflict_through_client():
    """Retried duplicates are harmless: the same signed subset is a replay (200);
    a different subset under the same pcs_id is a conflict (409)."""
    with MiniVerifier({"default": KEY}) as srv:
        client = SubmitClient([srv.url], policy=FAST, sleep=Recorder())
        assert client.submit(PCS).status == 202
        assert client.submit(PCS).status == 200
        other = dict(PCS, budget=0.5)
        other["sig"] = agent.Signer("hmac", KEY).sign(other)
        assert client.submit(other).outcome == "conflict"


# ----------------------------------------------------------------------------- state machine

results = st.one_of(
    st.builds(HttpAnswer, st.sampled_from([200, 202, 409, 400, 401, 413, 429, 500, 502, 503, 504]),
              st.one_of(st.none(), st.sampled_from(["0", "1", "3", "120", "2.5", "-1", "soon",
                                                    "Wed, 21 Oct 2015 07:28:00 GMT"]))),
    st.builds(TransportFailure, st.sampled_from(["ConnectError", "timeout"])),
)


@settings(max_examples=100, deadline=None)
@given(script=st.lists(results, min_size=1, max_size=12),
       n_urls=st.integers(1, 3),
       seed=st.integers(0, 2**32),
       base=st.floats(0.001, 1.0), factor=st.floats(1.0, 100.0),
       max_attempts=st.integers(1, 10), max_ra=st.floats(0.0, 30.0))
def test_retry_schedule_bounds_and_signed_bytes_never_change(script, n_urls, seed, base, factor,
                                                             max_attempts, max_ra):
    policy = RetryPolicy(base=base, cap=base * factor, max_attempts=max_attempts, max_retry_after=max_ra)
    urls = [f"http://r{i}.example/v1/pcs/submit" for i in range(n_urls)]
    check_submission(Submission(PCS, urls, rng=random.Random(seed), policy=policy, tenant="t"), script, policy)


def check_submission(sub: Submission, script, policy: RetryPolicy) -> None:
    """Drive ``sub`` through ``script`` (the last answer repeats) and check the
    schedule bounds, the unchanging signed bytes and the outcome."""
    now = 1_700_000_000.0
    action = sub.start(now)
    sends, waits, i = [action], [], 0
    while not isinstance(action, Done):
        if isinstance(action, Send):
            result = script[min(i, len(script) - 1)]
            i += 1
            action = sub.on_result(result, now)
        else:
            assert isinstance(action, Wait)
            waits.append(action.delay)
            now += action.delay
            action = sub.resume(now)
        if isinstance(action, Send):
            sends.append(action)
    # bounds: attempt count, each wait within its ceiling
    assert 1 <= len(sends) <= policy.max_attempts
    assert [s.attempt for s in sends] == list(range(1, len(sends) + 1))
    for k, d in enumerate(waits):  # the bound, written out independently of the module
        assert 0.0 <= d <= max(min(policy.cap, policy.base * 2.0**k), policy.max_retry_after) + 1e-9
        assert d <= wait_bound(policy, k) + 1e-9
    # signed bytes never change; only attempt/sent_at differ
    for s in sends:
        body = json.loads(s.body)
        assert canonical_bytes(body) == canonical_bytes(PCS)
        assert {k: v for k, v in body.items() if k not in ("attempt", "sent_at")} == PCS
        # sent_at is RFC 3339 text (ARCHITECTURE.md, openapi.yaml, the verifier); pcs.schema.json
        # still says number, so it is checked on its own here and the rest against the schema
        assert RFC3339.fullmatch(body["sent_at"])
        assert not list(SCHEMA.iter_errors({k: v for k, v in body.items() if k != "sent_at"}))
        assert s.headers == (("content-type", "application/json"), ("x-tenant-id", "t"))
    # the outcome matches the first terminal answer in the script
    first_terminal = next((r for r in script[: len(sends)] if isinstance(r, HttpAnswer)
                           and r.status not in (429, 500, 502, 503, 504)), None)
    last = script[min(len(sends) - 1, len(script) - 1)]
    if first_terminal is not None and first_terminal is last:
        expect = {200: "ack", 202: "ack", 409: "conflict"}.get(first_terminal.status, "dead_letter")
        assert action.outcome == expect
    else:
        assert action.outcome == "gave_up" and len(sends) == policy.max_attempts


# quality: the property check must catch planted bugs (a check that cannot fail is a defect)


class _DriftingSubmission(Submission):
    """Planted bug: a retry re-rounds the budget, changing the signed bytes."""

    def body_for(self, attempt, now):
        body = json.loads(super().body_for(attempt, now))
        if attempt > 1:
            body["budget"] = round(body["budget"] + 1e-6, 9)
        return json.dumps(body).encode()


def test_quality_check_catches_a_retry_that_changes_signed_bytes():
    policy = RetryPolicy(base=0.01, cap=0.1, max_attempts=3)
    script = [HttpAnswer(503), HttpAnswer(200)]
    check_submission(Submission(PCS, ["http://a/x"], rng=random.Random(0), policy=policy, tenant="t"),
                     script, policy)
    with pytest.raises(AssertionError):
        check_submission(_DriftingSubmission(PCS, ["http://a/x"], rng=random.Random(0), policy=policy,
                                             tenant="t"), script, policy)


def test_quality_check_catches_an_uncapped_backoff(monkeypatch):
    import flk.impl.agent.client as client_mod

    policy = RetryPolicy(base=1.0, cap=1.0, max_attempts=10, max_retry_after=0.0)
    script = [HttpAnswer(500)]
    check_submission(Submission(PCS, ["http://a/x"], rng=random.Random(4), policy=policy, tenant="t"),
                     script, policy)
    monkeypatch.setattr(client_mod, "backoff_ceiling", lambda p, k: p.base * 2.0**k)  # the cap forgotten
    with pytest.raises(AssertionError):
        check_submission(Submission(PCS, ["http://a/x"], rng=random.Random(4), policy=policy, tenant="t"),
                         script, policy)


@settings(max_examples=60, deadline=None)
@given(ra=st.integers(0, 50), seed=st.integers(0, 2**32))
def test_retry_after_is_a_lower_bound_up_to_the_clamp(ra, seed):
    policy = RetryPolicy(base=0.01, cap=0.1, max_attempts=3, max_retry_after=20.0)
    sub = Submission(PCS, ["http://a/x"], rng=random.Random(seed), policy=policy)
    sub.start(0.0)
    w = sub.on_result(HttpAnswer(429, str(ra)), 0.0)
    assert isinstance(w, Wait)
    assert min(ra, 20.0) <= w.delay <= max(min(2 * ra, 20.0), 0.01)


T0 = 1_700_000_000.0  # wall seconds (an HTTP-date Retry-After would be read against it)


def first_wait(policy: RetryPolicy, status: int, ra: str, seed: int) -> float:
    """The wait one fresh single-URL submission takes after ``status`` + ``Retry-After: ra`` at ``T0``."""
    sub = Submission(PCS, ["http://a/x"], rng=random.Random(seed), policy=policy)
    sub.start(T0)
    w = sub.on_result(HttpAnswer(status, ra), T0)
    assert isinstance(w, Wait)
    return w.delay


@settings(max_examples=200, deadline=None)
@given(base=st.floats(0.001, 1.0), factor=st.floats(1.0, 100.0), max_ra=st.floats(0.0, 120.0),
       ra=st.one_of(st.integers(0, 200), st.floats(0.0, 200.0).map(lambda x: f"{x:.3f}")),
       status=st.sampled_from([429, 503]), seed=st.integers(0, 2**32))
def test_a_retry_after_wait_is_never_early_and_never_above_the_cap(base, factor, max_ra, ra, status, seed):
    """The jittered Retry-After wait: at least what the server asked (clamped to
    ``max_retry_after``), at most twice that, never above the policy's bound."""
    policy = RetryPolicy(base=base, cap=base * factor, max_attempts=3, max_retry_after=max_ra)
    asked = float(ra)
    d = first_wait(policy, status, str(ra), seed)
    backoff = backoff_ceiling(policy, 0)
    # never earlier than asked (up to the cap), on the clock the client resumes by: the client
    # keeps the absolute instant T0 + Retry-After, so the comparison is exact there
    assert T0 + d >= T0 + min(asked, max_ra)
    assert d <= max(backoff, min(2 * asked, max_ra)) + 1e-6  # the spread: as long again, capped
    assert d <= wait_bound(policy, 0) + 1e-6


N_CLIENTS = 64


@settings(max_examples=100, deadline=None)
@given(ra=st.integers(1, 60), headroom=st.floats(2.0, 4.0), status=st.sampled_from([429, 503]))
def test_clients_told_the_same_retry_after_spread_out(ra, headroom, status):
    """64 clients (rng seeds 0..63, fixed: the catch does not depend on luck) answered the same
    Retry-After come back spread over [ra, 2 ra], not in one instant (the herd seed 1000070 of
    ``flk sim explore --swarm --mode liveness`` found). Fails on a client that waits exactly ra."""
    policy = RetryPolicy(base=0.05, cap=0.5, max_attempts=4, max_retry_after=ra * headroom)
    waits = sorted(first_wait(policy, status, str(ra), seed) for seed in range(N_CLIENTS))
    assert waits[0] >= ra and waits[-1] <= 2 * ra
    assert len(set(waits)) == N_CLIENTS  # no two in the same instant
    assert waits[-1] - waits[0] >= 0.8 * ra  # spread over most of the span
    window = ra / 8  # no eighth of the span holds more than a quarter of the herd
    assert max(sum(1 for w in waits if lo <= w < lo + window) for lo in waits) <= N_CLIENTS // 4


def test_a_retry_after_at_the_cap_is_the_cap():
    """When the server asks for the cap or more there is nothing above the floor to spread into."""
    policy = RetryPolicy(base=0.01, cap=0.1, max_attempts=3, max_retry_after=10.0)
    assert {first_wait(policy, 429, "10", s) for s in range(8)} == {10.0}
    assert {first_wait(policy, 503, "3600", s) for s in range(8)} == {10.0}


def test_same_seed_same_schedule():
    def schedule(seed):
        sub = Submission(PCS, ["http://a/x"], rng=random.Random(seed), policy=FAST)
        sub.start(0.0)
        out = []
        for _ in range(FAST.max_attempts - 1):
            w = sub.on_result(HttpAnswer(500), 0.0)
            out.append(w.delay)
            sub.resume(0.0)
        return out

    assert schedule(1) == schedule(1) != schedule(2)


def test_parse_retry_after():
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after(" 0 ", 0.0) == 0.0
    assert parse_retry_after("-3", 0.0) is None
    assert parse_retry_after("later", 0.0) is None
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 400.0) == 0.0


def test_submit_url_and_policy_validation():
    assert submit_url("http://h:1") == "http://h:1/v1/pcs/submit"
    assert submit_url("http://h:1/") == "http://h:1/v1/pcs/submit"
    assert submit_url("https://h/custom") == "https://h/custom"
    for bad in ("ftp://h", "h:80", ""):
        with pytest.raises(InvalidInput):
            submit_url(bad)
    with pytest.raises(InvalidInput):
        RetryPolicy(base=1.0, cap=0.5)
    with pytest.raises(InvalidInput):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidInput):
        Submission({k: v for k, v in PCS.items() if k != "sig"}, ["http://a/x"], rng=random.Random(0))


def test_state_machine_rejects_out_of_order_calls():
    sub = Submission(PCS, ["http://a/x"], rng=random.Random(0), policy=FAST)
    with pytest.raises(RuntimeError):
        sub.on_result(HttpAnswer(200), 0.0)
    sub.start(0.0)
    with pytest.raises(RuntimeError):
        sub.resume(0.0)
    assert sub.on_result(HttpAnswer(200), 0.0).outcome == "ack"
    with pytest.raises(RuntimeError):
        sub.on_result(HttpAnswer(200), 0.0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(now=st.one_of(st.floats(min_value=-1e9, max_value=4e9, allow_nan=False),
                     st.integers(-10**9, 4 * 10**9).map(lambda k: k / 1000),
                     st.integers(0, 10**6).map(lambda k: 1_800_000_000.0 + k / 2000)))
def test_rfc3339_is_isoformat_in_milliseconds_with_z(now):
    """sent_at text (formatted once per whole second) equals datetime's own isoformat."""
    import datetime

    from flk.impl.agent.client import rfc3339

    ref = datetime.datetime.fromtimestamp(round(float(now) * 1000) / 1000, tz=datetime.UTC)
    assert rfc3339(now) == ref.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert rfc3339(now) == rfc3339(now)  # the second's text cached from the call before


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                        | st.text(), lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(doc=st.dictionaries(st.text(max_size=8), _JSONISH, max_size=6))
def test_prepared_body_text_is_json_dumps_compact(doc):
    """prepare's encoder (built once, not per call) writes what json.dumps writes."""
    from flk.impl.agent.client import _compact_json

    assert _compact_json(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
