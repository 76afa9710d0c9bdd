"""The HTTP protocol's timers: one per connection, not one per request.

Why: uvicorn armed a keep-alive timer after every answer and cancelled it at the next
request's bytes, and the protocol's own head/body deadline timer was re-armed whenever a
shorter deadline followed a longer one -- loop timers made and cancelled per request on
the submit path's event loop. The connection's one timer now carries the keep-alive
deadline too and is armed at most the shortest timeout ahead, so a busy connection's
requests move a float (:meth:`flk.impl.server.httpguard.GuardedHttpToolsProtocol._watch`).
Driven here without sockets: requests fed to ``data_received`` of a protocol built as
``flk serve`` builds it, answers written to a recording transport."""

from __future__ import annotations

import asyncio

import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from flk.impl.server.httpguard import HttpLimits, protocol_class


class Hook:
    path, max_body = "/v1/pcs/submit", 65536

    def __call__(self, headers, body, respond):
        respond(200, [(b"content-type", b"application/json")], b'{"ok":true}')


async def app(scope, receive, send):  # the ASGI route: /health answers 200
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


app.direct_submit = Hook()


class Transport:
    def __init__(self):
        self.written, self.closing = [], False

    def write(self, data):
        self.written.append(bytes(data))

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class CountingLoop(asyncio.SelectorEventLoop):
    def __init__(self):
        super().__init__()
        self.armed = 0

    def call_at(self, when, callback, *args, **kwargs):
        self.armed += 1
        return super().call_at(when, callback, *args, **kwargs)


def protocol(loop, keep_alive=5, limits=HttpLimits(header_timeout_s=10, body_timeout_s=30)):
    config = uvicorn.Config(app, http=protocol_class(limits), access_log=False, log_level="warning",
                            date_header=False, server_header=False, proxy_headers=False,
                            timeout_keep_alive=keep_alive)
    config.load()
    proto = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    proto.connection_made(Transport())
    return proto


SUBMIT = b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def test_a_busy_connection_arms_its_timer_once():
    loop = CountingLoop()
    try:
        proto = protocol(loop)
        before = loop.armed
        for _ in range(200):
            proto.data_received(SUBMIT)
        assert len(proto.transport.written) == 200
        assert loop.armed - before == 0  # (uvicorn's keep-alive timer alone was 200)
        assert proto._watching == "idle" and proto._deadline > loop.time()
    finally:
        loop.close()


@settings(max_examples=60, deadline=None)
@given(header=st.floats(0.5, 60), body=st.floats(0.5, 60), keep_alive=st.integers(1, 60))
def test_the_timer_never_fires_after_the_deadline_it_guards(header, body, keep_alive):
    """Whatever the timeouts, after the connection's start, a head, a body and an answer the
    armed timer is due no later than the deadline being watched (it re-arms itself if early)."""
    loop = CountingLoop()
    try:
        proto = protocol(loop, keep_alive, HttpLimits(header_timeout_s=header, body_timeout_s=body))
        steps = [b"", b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\n", b"Content-Length: 2\r\n\r\n", b"{}"]
        for data in steps:
            if data:
                proto.data_received(data)
            assert proto._watching in ("head", "body", "idle")
            assert proto._timer is not None and proto._timer_at <= proto._deadline + 1e-9
        assert proto._watching == "idle" and abs(proto._deadline - loop.time() - keep_alive) < 1
    finally:
        loop.close()


def test_the_idle_timer_closes_and_bytes_cancel_it():
    loop = CountingLoop()
    try:
        proto = protocol(loop, keep_alive=1)
        proto.data_received(SUBMIT)
        assert proto._watching == "idle"
        proto.data_received(b"\r\n")  # any bytes end the keep-alive wait (as uvicorn's did)
        assert proto._watching is None
        proto.data_received(SUBMIT)
        proto._deadline = loop.time() - 0.001  # the keep-alive deadline passed
        proto._on_timer()
        assert proto.transport.closing
    finally:
        loop.close()
