"""The load generator's hand-rolled HTTP/1.1 client against a raw TCP server
that answers with scripted bytes: framing variants and broken answers."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from flk.impl.agent.loadgen import Connection, HttpError, _request_head


class RawServer:
    """Answers each request with the next scripted raw response; ``None`` closes
    the connection without answering."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn) -> bool:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            rest += conn.recv(65536)
        return True

    def _serve(self):
        while self.responses:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.responses and self._read_request(conn):
                    resp = self.responses.pop(0)
                    if resp is None:
                        break
                    conn.sendall(resp)
                    if b"connection: close" in resp.lower() or b"content-length" not in resp.lower() \
                            and b"chunked" not in resp.lower():
                        break

    def close(self):
        self.sock.close()


def run(coro):
    return asyncio.run(coro)


async def _posts(port, n, timeout=3.0):
    (_, _), head = _request_head(f"http://127.0.0.1:{port}/v1/pcs/submit", [("x-tenant-id", "t")])
    conn = Connection("127.0.0.1", port, timeout)
    out = []
    for _ in range(n):
        try:
            out.append(await conn.post(head, b'{"a":1}'))
        except HttpError as exc:
            out.append(("error", str(exc)))
    conn.close()
    return out


def test_keep_alive_content_length_and_chunked_on_one_connection():
    srv = RawServer([
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nIdempotent-Replayed: true\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n",
    ])
    try:
        out = run(_posts(srv.port, 3))
    finally:
        srv.close()
    assert [o[0] for o in out] == [202, 200, 409]
    assert out[1][1]["idempotent-replayed"] == "true"
    assert srv.connections == 1  # all three on one keep-alive connection


def test_close_delimited_body_then_reconnect():
    srv = RawServer([b"HTTP/1.1 200 OK\r\n\r\nbody until close", b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n"])
    try:
        out = run(_posts(srv.port, 2))
    finally:
        srv.close()
    assert [o[0] for o in out] == [200, 202] and srv.connections == 2


@pytest.mark.parametrize("raw,reason", [
    (b"garbage\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", "ValueError"),
    (None, "IncompleteReadError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "IncompleteReadError"),
])
def test_broken_answers_are_transport_errors_and_the_connection_is_replaced(raw, reason):
    srv = RawServer([raw, b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n"])
    try:
        out = run(_posts(srv.port, 2))
    finally:
        srv.close()
    assert out[0] == ("error", reason)
    assert out[1][0] == 202 and srv.connections == 2


def test_connect_refused_and_timeout_are_transport_errors():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert run(_posts(port, 1))[0][0] == "error"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts (backlog) but never answers
    try:
        out = run(_posts(silent.getsockname()[1], 1, timeout=0.3))
    finally:
        silent.close()
    assert out == [("error", "TimeoutError")]


def test_idle_connection_is_reopened_before_use(monkeypatch):
    """A keep-alive connection idle longer than IDLE_S is replaced rather than
    reused (servers close idle keep-alives; a stale one would cost a retry)."""
    ok = b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n"
    monkeypatch.setattr(Connection, "IDLE_S", -1.0)
    srv = RawServer([ok, ok, ok])
    try:
        out = run(_posts(srv.port, 3))
    finally:
        srv.close()
    assert [o[0] for o in out] == [202, 202, 202] and srv.connections == 3
