"""Pipelined requests: answered one by one in order, or the
connection is closed before any later request is processed.

Every mix of up to three requests of four kinds -- a new valid PCS, a duplicate
(of a PCS stored earlier in the same pipeline, or before it), a request the
application refuses (a body that is no PCS: 400, the connection stays open)
and malformed HTTP (the parser refuses it: 400 and close) -- is sent in ONE
write on one connection to a real ``flk serve``. Then each request's fate is
read back: the answers come in request order; a PCS submitted in the pipeline
is stored exactly when its answer is among them and says so (200, replayed or
not as expected); nothing after malformed HTTP is processed.
"""

from __future__ import annotations

import itertools
import json
import socket

import httpx
import pytest

from flk.impl.testing.workload import bodies

from .httpwire import read_raw_answers
from .proc import ServerProc

pytestmark = pytest.mark.server

KEY = "0123456789abcdef0123456789abcdef"
KINDS = ("new", "dup", "badpcs", "badhttp")
MIXES = [mix for n in (1, 2, 3) for mix in itertools.product(KINDS, repeat=n)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProc(tmp_path_factory.mktemp("pipelining"), {"PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "1"})
    srv.start()
    yield srv
    srv.stop()
    srv.kill()
    log = srv.log_text()
    assert "Traceback" not in log and '"event":"unhandled"' not in log, log[-3000:]


def submit_bytes(body: bytes) -> bytes:
    return (b"POST /v1/pcs/submit HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def read_answers(sock: socket.socket, expected: int) -> tuple[list[tuple[int, dict, bytes]], bool]:
    """The answers on ``sock`` (status, headers, body) until ``expected`` came or it closed."""
    raw, closed = read_raw_answers(sock, expected)
    answers = []
    for head, body in raw:
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        answers.append((int(lines[0].split()[1]), headers, body))
    return answers, closed


class Fresh:
    """New PCS bodies, never submitted before."""

    def __init__(self) -> None:
        self.pool = iter(bodies(KEY.encode(), 2000, seed=27))

    def __call__(self) -> bytes:
        return next(self.pool)


@pytest.fixture(scope="module")
def fresh():
    return Fresh()


def stored(srv: ServerProc, body: bytes) -> bool:
    """Was ``body`` stored before this call? (A resubmission answers replayed then.)"""
    resp = httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=20)
    assert resp.status_code == 200, resp.text
    return resp.headers.get("idempotent-replayed") == "true"


@pytest.mark.parametrize("mix", MIXES, ids="-".join)
def test_pipelined_mix_is_answered_in_order_or_not_processed(server, fresh, mix) -> None:
    earlier = fresh()
    assert not stored(server, earlier)  # stored now: a "dup" with no new before it repeats this one
    plan, last_new = [], earlier
    for kind in mix:
        if kind == "new":
            last_new = fresh()
            plan.append((kind, last_new, submit_bytes(last_new)))
        elif kind == "dup":
            plan.append((kind, last_new, submit_bytes(last_new)))
        elif kind == "badpcs":
            plan.append((kind, None, submit_bytes(b'{"pcs_id": "not a pcs"}')))
        else:
            plan.append((kind, None, b"POST /v1/pcs/submit HTTP/1.1\r\nhost: x\r\ncontent-length: zz\x00\r\n\r\n"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"".join(raw for _, _, raw in plan))
        answers, closed = read_answers(sock, len(plan))
    cut = mix.index("badhttp") if "badhttp" in mix else len(mix)
    # every request before malformed HTTP is answered, in order, and then the 400 for it
    assert len(answers) == min(len(mix), cut + 1), (mix, [a[0] for a in answers])
    seen: set[bytes] = {earlier}
    for (kind, body, _), (status, headers, payload) in zip(plan, answers, strict=False):
        if kind in ("new", "dup"):
            assert status == 200, (mix, kind, payload[:200])
            replayed = headers.get("idempotent-replayed") == "true"
            assert replayed == (body in seen), (mix, kind, replayed)
            seen.add(body)
        else:
            assert status == 400, (mix, kind, status, payload[:200])
            assert headers["content-type"] == "application/problem+json"
            slug = json.loads(payload)["type"].rsplit(":", 1)[1]
            assert slug == ("bad-request" if kind == "badhttp" else slug), slug
    if "badhttp" in mix:
        assert closed, mix
    # nothing after malformed HTTP was processed: those PCS are stored only now
    for kind, body, _ in plan[cut + 1:]:
        if kind == "new" and body not in seen:
            assert not stored(server, body), (mix, "a request after malformed HTTP was processed")
    # every PCS answered as stored is stored
    for body in seen:
        assert stored(server, body)
