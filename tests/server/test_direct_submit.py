"""The HTTP protocol's direct submit path answers byte for byte what the ASGI route answers.

Why: ``POST /v1/pcs/submit`` with a ``Content-Length`` of at most 64 KiB is handed by
:class:`flk.impl.server.httpguard.GuardedHttpToolsProtocol` straight to
:meth:`flk.impl.server.app.Server.submit_direct` once its body is complete -- no ASGI task,
no receive/send messages (the event loop's cost per request). The reference is the same
protocol with ``direct=False`` (every request through the ASGI application, whose submit
route is :meth:`Server.submit_asgi`). Two real servers (uvicorn + uvloop + the guarded
protocol, one worker each, own data dirs) get the same requests in the same order over
real sockets; every answer must be the same bytes -- status line, every header in order,
body -- except the ``first_seen`` time inside a body (each server's own clock). Covered:
new, replayed and conflicting PCS, bodies that are no PCS or no JSON, a bad signature,
tenant header refusals, a length above the limit, chunked bodies, ``Connection: close``,
HTTP/1.0, pipelined requests, arbitrary bodies and tenant headers (Hypothesis).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.server import httpguard
from flk.impl.server.app import create_app
from flk.impl.server.config import load_config
from flk.impl.server.httpguard import HttpLimits, protocol_class
from flk.impl.server.supervisor import _uvicorn_config
from flk.impl.testing.workload import bodies

from .httpwire import read_raw_answers

KEY = "0123456789abcdef0123456789abcdef"
FIRST_SEEN = re.compile(rb'"first_seen":[-+0-9.eE]+')


class InProcessServer:
    """One worker's uvicorn in a thread, as ``flk serve`` configures it (httpguard protocol)."""

    def __init__(self, data_dir, direct: bool) -> None:
        import uvicorn

        cfg = load_config({"DATA_DIR": str(data_dir), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "1",
                           "WORKERS": "1"})
        self.app = create_app(cfg, 0)
        hook, self.direct_calls = self.app.direct_submit, []

        class Counted:  # the app's hook, counting the requests the protocol hands it
            path, max_body = hook.path, hook.max_body

            def __call__(inner, *args):  # noqa: N805
                self.direct_calls.append(1)
                hook(*args)

        self.app.direct_submit = Counted()
        config = _uvicorn_config(self.app, 5.0, (cfg,))  # exactly as a flk serve worker configures it
        if not direct:
            config.http = protocol_class(HttpLimits.from_config(cfg), direct=False)
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    direct = InProcessServer(tmp_path_factory.mktemp("direct"), True)
    asgi = InProcessServer(tmp_path_factory.mktemp("asgi"), False)
    yield direct, asgi
    direct.stop()
    asgi.stop()


def exchange(port: int, raw: bytes, answers: int) -> tuple[list[bytes], bool]:
    """Send ``raw`` in one write; the ``answers`` responses (raw bytes; a ``first_seen`` time
    and the ``content-length`` of its body masked) and whether the server closed the
    connection after them."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        got, closed = read_raw_answers(sock, answers)
    out = []
    for head, body in got:
        if FIRST_SEEN.search(body):  # the time's digits vary: so do the body's length and its header
            body = FIRST_SEEN.sub(b'"first_seen":T', body)
            head = re.sub(rb"(?im)^(content-length: *)\d+", rb"\1N", head)
        out.append(head + b"\r\n\r\n" + body)
    return out, closed


def same(servers, raw: bytes, answers: int = 1) -> list[bytes]:
    direct, asgi = servers
    got_direct = exchange(direct.port, raw, answers)
    got_asgi = exchange(asgi.port, raw, answers)
    assert got_direct == got_asgi, (raw[:300], got_direct, got_asgi)
    return got_direct[0]


def post(body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST /v1/pcs/submit HTTP/" + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def chunked(body: bytes) -> bytes:
    return (b"POST /v1/pcs/submit HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


POOL = iter(bodies(KEY.encode(), 400, seed=91))


def test_the_direct_path_is_the_one_taken(servers):
    direct, asgi = servers
    before = len(direct.direct_calls)
    same(servers, post(next(POOL)) + post(b"{}"), 2)
    same(servers, chunked(next(POOL)))  # not a direct request: the ASGI route in both
    assert len(direct.direct_calls) == before + 2
    assert asgi.direct_calls == []  # the reference never takes it


def test_a_plain_submission_takes_the_lean_head_and_any_other_request_does_not(servers, monkeypatch):
    """The lean head (no uvicorn scope, cycle or event: httpguard._DirectCycle) is taken by a
    POST to the exact path with one Content-Length, nothing else in flight on the
    connection; a query string, an Expect, a chunked body, a pipelined request and the
    reference server (no direct path) take uvicorn's head -- and every answer is the same."""
    made = []
    init = httpguard._DirectCycle.__init__

    def counting(self, *args):
        made.append(1)
        init(self, *args)

    monkeypatch.setattr(httpguard._DirectCycle, "__init__", counting)
    same(servers, post(next(POOL)))
    assert len(made) == 1  # the direct server's, not the reference's
    same(servers, post(next(POOL), version=b"1.0"))  # closes after its answer, as uvicorn's
    assert len(made) == 2
    same(servers, post(next(POOL)) + post(next(POOL)), 2)  # the second waits behind the first
    assert len(made) == 3
    query = post(next(POOL)).replace(b"/v1/pcs/submit ", b"/v1/pcs/submit?x=1 ", 1)
    assert same(servers, query)[0].startswith(b"HTTP/1.1 200 ")  # still direct, by uvicorn's head
    same(servers, chunked(next(POOL)))
    same(servers, post(b"{}", b"content-length: 2\r\n"))  # two lengths: uvicorn's head (and a 400)
    assert len(made) == 3


def test_named_cases_answer_the_same(servers):
    new, other = next(POOL), next(POOL)
    status = lambda answers: [int(a.split(b" ", 2)[1]) for a in answers]  # noqa: E731
    assert status(same(servers, post(new))) == [200]
    replay = same(servers, post(new))
    assert status(replay) == [200] and b"idempotent-replayed: true" in replay[0]
    conflicting = json.loads(new)
    conflicting["coh_star"] = 0.5  # same pcs_id, another payload: its signature no longer matches
    assert status(same(servers, post(json.dumps(conflicting).encode()))) in ([401], [409])
    assert status(same(servers, post(b'{"pcs_id": "not a pcs"}'))) == [400]
    assert status(same(servers, post(b"not json at all"))) == [400]
    assert status(same(servers, post(b""))) == [400]
    assert status(same(servers, post(other, b"x-tenant-id: a\r\nx-tenant-id: b\r\n"))) == [400]
    assert status(same(servers, post(other, b"x-tenant-id: " + b"t" * 300 + b"\r\n"))) == [431]
    big = b'{"pad":"' + b"x" * 70_000 + b'"}'  # above the direct path's 64 KiB: the ASGI route in both
    assert status(same(servers, post(big)))[0] in (400, 413)
    assert status(same(servers, chunked(other))) == [200]
    closed = same(servers, post(next(POOL), b"connection: close\r\n"))
    assert b"connection: close" in closed[0]
    assert b"connection: close" in same(servers, post(next(POOL), version=b"1.0"))[0]
    a, b, c = next(POOL), next(POOL), next(POOL)
    assert status(same(servers, post(a) + post(b) + post(a) + post(b"{}") + post(c), 5)) == [200] * 3 + [400, 200]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=300),
                      st.sampled_from(["pcs"]).map(lambda _: next(POOL)),
                      st.builds(lambda d: json.dumps(d).encode(),
                                st.dictionaries(st.sampled_from(["pcs_id", "epoch", "sig", "schema", "x"]),
                                                st.one_of(st.integers(), st.text(max_size=20), st.none())))),
       tenant=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)),
       twice=st.booleans())
def test_any_body_and_tenant_answer_the_same(servers, body, tenant, twice):
    extra = b"" if tenant is None else b"x-tenant-id: " + tenant.encode() + b"\r\n"
    same(servers, post(body, extra) * (2 if twice else 1), 2 if twice else 1)


class RaisingDriver:
    """A batch driver whose submit raises at once (both routes must answer 500 and give the
    limiter slot back)."""

    def submit(self, body, tenant):
        raise RuntimeError("driver unavailable")


def test_a_driver_that_raises_answers_500_and_frees_the_slot(servers):
    saved = []
    for srv in servers:
        server = srv.app.state.server
        saved.append(server.driver)
        server.driver = RaisingDriver()
    try:
        answers = same(servers, post(next(POOL)))
        assert answers[0].startswith(b"HTTP/1.1 500 ")
        for srv in servers:
            assert srv.app.state.server.limiter.inflight == 0
    finally:
        for srv, driver in zip(servers, saved, strict=True):
            srv.app.state.server.driver = driver
    assert same(servers, post(next(POOL)))[0].startswith(b"HTTP/1.1 200 ")  # and it serves again


def test_a_client_that_does_not_read_gets_every_answer_in_order(servers):
    """Write back-pressure: many pipelined direct requests from a client that reads only
    later (a small receive buffer) fill the server's write buffer; the direct path waits
    for it to drain (as uvicorn's send does) and every answer still arrives, in order."""
    direct, _ = servers
    n = 40000
    bad = post(b"{}", b"x-tenant-id: a\r\nx-tenant-id: b\r\n")  # refused before the WAL: 400 at once
    before = len(direct.direct_calls)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", direct.port))
    sender = threading.Thread(target=sock.sendall, args=(bad * n,), daemon=True)
    sender.start()
    time.sleep(1.0)  # the client reads nothing meanwhile
    buf, answers = b"", 0
    while answers < n or not buf.endswith(b"}"):  # every answer, the last one whole
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {answers} answers"
        buf += chunk
        answers = buf.count(b"HTTP/1.1 400 ")
    sender.join(30)
    sock.close()
    assert buf.count(b"HTTP/1.1 ") == n
    heads = buf.split(b"HTTP/1.1 400 Bad Request\r\n")[1:]
    assert len(heads) == n and all(h.endswith(b"}") for h in heads)  # each answer whole, none cut
    assert len(direct.direct_calls) - before == n  # every one took the direct path


def test_the_installed_uvicorn_has_what_the_direct_path_uses(monkeypatch):
    """The direct path leans on uvicorn internals (its task hook, status lines, the request
    cycle's attributes): the installed uvicorn has them, so the path is on; a uvicorn without
    one of them turns it off (every request through ASGI) instead of failing."""
    from uvicorn.protocols.http import httptools_impl

    from flk.impl.server import httpguard

    assert httpguard.DIRECT_SUPPORTED and httpguard.direct_path_supported()
    monkeypatch.delattr(httptools_impl.HttpToolsProtocol, "_start_asgi_task")
    assert not httpguard.direct_path_supported()
    monkeypatch.undo()

    class OtherCycle:  # a cycle that no longer keeps default_headers
        def __init__(self):
            self.scope = self.body = self.keep_alive = None

    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", OtherCycle)
    assert not httpguard.direct_path_supported()
    monkeypatch.undo()
    monkeypatch.delattr(httpguard.uvicorn_utils, "get_client_addr")
    assert not httpguard.direct_path_supported()
    monkeypatch.undo()

    class OtherProtocol(httptools_impl.HttpToolsProtocol):  # a protocol without its flow control
        def __init__(self):
            self.app = self.cycle = self.loop = self.tasks = self.transport = None

    monkeypatch.setattr(httpguard, "HttpToolsProtocol", OtherProtocol)
    assert not httpguard.direct_path_supported()
    monkeypatch.undo()
    assert httpguard.direct_path_supported()


def test_with_the_direct_path_unsupported_submissions_take_asgi(tmp_path, monkeypatch):
    from flk.impl.server import httpguard

    monkeypatch.setattr(httpguard, "DIRECT_SUPPORTED", False)
    srv = InProcessServer(tmp_path, True)
    try:
        answers, _ = exchange(srv.port, post(next(POOL)), 1)
        assert answers and answers[0].startswith(b"HTTP/1.1 200") and srv.direct_calls == []
    finally:
        srv.stop()
