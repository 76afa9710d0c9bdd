"""``flk agent submit --outbox``: append, submit, ack (the outbox and the submit client wired together).

At-least-once end to end: a record leaves the outbox only once the server
answered it (or it was dead-lettered); a killed or failed drain leaves it
pending and the next drain resends the *same signed bytes*.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from agent_ports import dead_url
from agent_scripted_server import PROBLEM, MiniVerifier, ScriptedServer

from flk.impl.agent import builder as agent
from flk.impl.agent.client import DeadLetterFile, RetryPolicy, SubmitClient, drain_outbox
from flk.impl.agent.outbox import Outbox
from flk.impl.core.canonical import canonical_bytes

KEY = b"outbox-drain-key"
SIGNER = agent.Signer("hmac", KEY)
FAST = RetryPolicy(base=0.001, cap=0.002, max_attempts=2, max_retry_after=0.01)


def make_pcs(n: int) -> list[dict]:
    return [agent.build_pcs([[float(i), float(i * i % 7)], [1.0, 2.0], [3.0, float(i % 3)]],
                            b"stream-%d" % i, "shard-o", i, SIGNER) for i in range(n)]


def _flk(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "flk.impl", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def test_drain_acks_answered_records_and_keeps_the_rest_across_restart(tmp_path):
    records = make_pcs(6)
    box = str(tmp_path / "outbox")
    with Outbox(box) as ob:
        for pcs in records:
            ob.append(json.dumps(pcs).encode())
    script = [(202, {}, b"{}"), (409, PROBLEM, b"{}"), (400, PROBLEM, b'{"title":"bad"}'),
              (500, {}, b""), (500, {}, b"")] + [(202, {}, b"{}")] * 10
    dlq = tmp_path / "dlq.jsonl"
    with ScriptedServer(script) as srv:
        client = SubmitClient([srv.url], policy=FAST, dead_letter=DeadLetterFile(str(dlq)), sleep=lambda d: None)
        with Outbox(box) as ob:
            res = drain_outbox(ob, client)
        # 202 ack, 409 conflict, 400 dead letter, then 500+500 = gave up: drain stops
        assert (res.acked, res.conflicts, res.dead_lettered, res.gave_up) == (1, 1, 1, 1)
        assert res.remaining == 3
        assert json.loads(dlq.read_text())["pcs_id"] == records[2]["pcs_id"]
        with Outbox(box) as ob:  # acks survived the restart; order kept
            assert [json.loads(d)["pcs_id"] for _, d in ob.pending()] == [p["pcs_id"] for p in records[3:]]
            res2 = drain_outbox(ob, client)
        assert res2.acked == 3 and res2.remaining == 0
    # record 3 was sent three times (500, 500, then 202 on the next drain): same signed bytes
    sent3 = [r for r in srv.requests if json.loads(r["body"])["pcs_id"] == records[3]["pcs_id"]]
    assert len(sent3) == 3
    assert {canonical_bytes(json.loads(r["body"])) for r in sent3} == {canonical_bytes(records[3])}
    with Outbox(box) as ob:
        assert ob.pending() == []


def test_cli_build_appends_and_submit_drains(tmp_path, monkeypatch):
    csv = tmp_path / "ev.csv"
    csv.write_text("1,2\n3,4\n5,1\n")
    box = str(tmp_path / "ob")
    env = dict(os.environ, PCS_HMAC_KEY=KEY.decode())
    built = subprocess.run([sys.executable, "-m", "flk.impl", "agent", "build", "--input", str(csv),
                            "--shard-id", "s", "--epoch", "1", "--outbox", box],
                           capture_output=True, text=True, env=env, timeout=60)
    assert built.returncode == 0, built.stderr
    pcs = json.loads(built.stdout)
    # the server is down: the record stays in the outbox, exit 1
    down = _flk(["agent", "submit", "--url", dead_url(), "--outbox", box, "--max-attempts", "2",
                 "--backoff-base", "0.001", "--backoff-cap", "0.002", "--json",
                 "--dlq", str(tmp_path / "d.jsonl")])
    assert down.returncode == 1, down.stderr
    assert json.loads(down.stdout)["remaining"] == 1
    with MiniVerifier({"default": KEY}) as srv:
        up = _flk(["agent", "submit", "--url", srv.url, "--outbox", box, "--json",
                   "--dlq", str(tmp_path / "d.jsonl")])
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["acked"] == 1
        assert srv.store == {("default", pcs["pcs_id"]): srv.store[("default", pcs["pcs_id"])]}
    with Outbox(box) as ob:
        assert ob.pending() == []
    assert not (tmp_path / "d.jsonl").exists()


def test_sigkill_during_drain_loses_nothing_and_resends_same_bytes(tmp_path):
    """Kill -9 the drain mid-way, restart it: every record reaches the server,
    the outbox ends empty, and every resend carried the original signed bytes."""
    records = make_pcs(40)
    box = str(tmp_path / "ob")
    pcs_file = tmp_path / "p.jsonl"
    pcs_file.write_text("".join(json.dumps(p) + "\n" for p in records))
    with MiniVerifier({"default": KEY}) as srv:
        srv.delay = 0.02
        proc = subprocess.Popen([sys.executable, "-m", "flk.impl", "agent", "submit", "--url", srv.url,
                                 "--outbox", box, "--pcs", str(pcs_file), "--json",
                                 "--dlq", str(tmp_path / "d.jsonl")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(srv.requests) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert 10 <= len(srv.requests) < 40
        srv.delay = 0.0
        done = _flk(["agent", "submit", "--url", srv.url, "--outbox", box, "--json",
                     "--dlq", str(tmp_path / "d.jsonl")])
        assert done.returncode == 0, done.stderr
        assert {pid for _, pid in srv.store} == {p["pcs_id"] for p in records}
        by_id = {}
        for r in srv.requests:
            body = json.loads(r["body"])
            by_id.setdefault(body["pcs_id"], set()).add(canonical_bytes(body))
        assert all(v == {canonical_bytes(p)} for p, v in ((p, by_id[p["pcs_id"]]) for p in records))
    with Outbox(box) as ob:
        assert ob.pending() == []
