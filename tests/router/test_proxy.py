"""The real router answers any bytes (a total function): flk.impl.router.proxy over in-memory streams.

Hypothesis feeds arbitrary bytes and structured-but-hostile request heads and bodies to the
proxy's connection handler, with a real upstream region on loopback (an asyncio HTTP server that
answers 200, on a kernel-chosen port) and a region that refuses connections. Nothing may escape the handler, every
non-empty input gets at least one whole HTTP/1.1 answer, and the first answer is the one the
sans-I/O framing rules (flk.impl.router.wire) call for: the rejection's status for a head it
refuses, 431 for an oversized head, 502 when the chosen region does not answer, else the region's.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.router.health import HealthTable
from flk.impl.router.proxy import Router
from flk.impl.router.wire import (
    MAX_HEAD,
    Rejection,
    parse_chunk_size,
    parse_request_head,
    parse_response_head,
)

STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


async def _region(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A region: reads forwarded requests (always content-length framed) and answers 200 with what it got."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"\r\ncontent-length: (\d+)", head).group(1))
            body = await reader.readexactly(n)
            doc = json.dumps({"line": head.split(b"\r\n")[0].decode("latin-1"), "body": len(body)}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(doc)
                         + doc)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def answers(data: bytes, region=None) -> list[tuple[int, bytes]]:
    """Run the proxy's handler on one connection that sends ``data``; its answers (status, whole head)."""

    async def go() -> bytes:
        server = await asyncio.start_server(region or _region, "127.0.0.1", 0)  # a kernel-chosen free port
        live = server.sockets[0].getsockname()[1]
        with socket.socket() as dead:  # bound, never listening: a connection to it is refused
            dead.bind(("127.0.0.1", 0))
            router = Router({"eu": ("127.0.0.1", live), "us": dead.getsockname()}, HealthTable(["eu", "us"]),
                            interval=1.0, timeout=0.5, upstream_timeout=5.0, events=None)
            reader = asyncio.StreamReader(limit=MAX_HEAD)
            reader.feed_data(data)
            reader.feed_eof()
            writer = _Writer()
            try:
                async with asyncio.timeout(20):
                    await router.handle(reader, writer)  # nothing may escape
            finally:
                for u in router.up.values():
                    for _r, w, _t in u.idle:
                        w.close()
                server.close()
                await server.wait_closed()
        return bytes(writer.out)

    out = asyncio.run(go())
    found, pos = [], 0
    while pos < len(out):
        m = STATUS.match(out, pos)
        assert m, out[pos:pos + 200]
        end = out.index(b"\r\n\r\n", pos) + 4
        n = int(re.search(rb"\r\ncontent-length: (\d+)\r\n", out[pos:end]).group(1))
        found.append((int(m.group(1)), out[pos:end]))
        pos = end + n
    assert pos == len(out)
    return found


def expected_first(data: bytes) -> int | None:
    """The first answer's status by the framing rules (None: the region decides, 200 from the live one)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return 431 if len(data) > MAX_HEAD else 400
    if end > MAX_HEAD:
        return 431
    head = parse_request_head(data[:end])
    if isinstance(head, Rejection):
        return head.status
    if head.method == "GET" and head.target == "/_router/status":
        return 200
    body = data[end + 4:]
    if head.length is not None:
        return 400 if len(body) < head.length else (502 if head.home == "us" else 200)
    return None  # chunked: checked by the proxy's chunk rules


tokens = st.sampled_from([b"GET", b"POST", b"PUT", b"G ET", b"", b"\x00", b"post"])
targets = st.sampled_from([b"/v1/pcs", b"/_router/status", b"/ready", b"", b"/a b", b"/\x7f", b"*"])
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1", b""])
names = st.sampled_from([b"content-length", b"Content-Length", b"transfer-encoding", b"x-flk-home", b"host",
                         b" folded", b"bad name", b"", b"x-\xff"])
values = st.one_of(st.sampled_from([b"0", b"5", b"12", b"-1", b"1e3", b"99999999999", b"chunked", b"gzip",
                                    b"eu", b"us", b"ap", b"", b"a\x00b"]), st.binary(max_size=12))


@st.composite
def requests(draw) -> bytes:
    line = b" ".join([draw(tokens), draw(targets), draw(versions)])
    headers = draw(st.lists(st.tuples(names, values), max_size=5))
    head = b"\r\n".join([line] + [k + b": " + v for k, v in headers]) + b"\r\n\r\n"
    return head + draw(st.binary(max_size=40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), requests(), st.lists(requests(), min_size=2, max_size=3).map(b"".join)))
def test_any_bytes_get_an_answer_and_the_first_is_the_one_the_framing_rules_call_for(data):
    got = answers(data)
    assert bool(got) == bool(data), (data, got)
    if not data:
        return
    assert {s for s, _ in got} <= {200, 400, 413, 431, 501, 502}, got
    want = expected_first(data)
    if want is not None:
        assert got[0][0] == want, (data, got[0])
    if got[-1][0] in (400, 413, 431, 501):
        assert b"connection: close" in got[-1][1] and b"application/problem+json" in got[-1][1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=30), max_size=4), st.sampled_from([b"eu", b"us"]),
       st.sampled_from([b"", b";ext=1", b"zz", b" ;x", b"-"]))
def test_chunked_bodies_are_reassembled_or_refused(chunks, home, junk):
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), junk if i == 0 else b"", c) for i, c in enumerate(chunks))
    data = b"POST /v1/pcs HTTP/1.1\r\nx-flk-home: " + home + b"\r\ntransfer-encoding: chunked\r\n\r\n" + body + \
        b"0\r\n\r\n"
    got = answers(data)
    first_ok = not chunks or not isinstance(parse_chunk_size(b"%x%s" % (len(chunks[0]), junk)), Rejection)
    if first_ok:
        assert got[0][0] == (502 if home == b"us" else 200), got
    else:
        assert got[0][0] == 400, got


def test_an_oversized_head_is_431_and_a_clean_request_reaches_the_region_without_the_home_header():
    big = b"GET / HTTP/1.1\r\nx-pad: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n"
    assert [s for s, _ in answers(big)] == [431]
    ok = answers(b"POST /v1/pcs HTTP/1.1\r\nx-flk-home: eu\r\ncontent-length: 3\r\n\r\nabc")
    assert len(ok) == 1 and ok[0][0] == 200 and b"x-flk-region: eu" in ok[0][1]
    gone = answers(b"GET /ready HTTP/1.1\r\nx-flk-home: us\r\n\r\n")
    assert gone[0][0] == 502 and b"x-flk-region: us" in gone[0][1]
    status = answers(b"GET /_router/status HTTP/1.1\r\n\r\n")
    assert status[0][0] == 200


status_lines = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.0 202", b"HTTP/1.1 100 Continue",
                                b"HTTP/1.1 99999 X", b"HTTP/2 200 OK", b"garbage", b"", b"HTTP/1.1 2OO OK"])
answer_headers = st.lists(st.tuples(st.sampled_from([b"content-length", b"transfer-encoding", b"connection", b"x-a",
                                                     b"bad name", b""]),
                                    st.one_of(st.sampled_from([b"2", b"-1", b"chunked", b"close", b"x"]),
                                              st.binary(max_size=8))), max_size=4)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200),
                 st.tuples(status_lines, answer_headers, st.binary(max_size=20)).map(
                     lambda t: b"\r\n".join([t[0]] + [k + b": " + v for k, v in t[1]]) + b"\r\n\r\n" + t[2])))
def test_any_answer_of_a_region_is_relayed_well_framed_or_becomes_a_502(answer):
    """The other side of totality: whatever bytes a region sends back, the client gets one whole
    HTTP/1.1 answer with a final status -- the region's when the router can frame it, else 502."""

    async def region(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()

    got = answers(b"POST /v1/pcs HTTP/1.1\r\nx-flk-home: eu\r\ncontent-length: 2\r\n\r\nhi", region=region)
    assert len(got) == 1 and 200 <= got[0][0] <= 599, got
    assert b"x-flk-region: eu" in got[0][1]
    head = answer.split(b"\r\n\r\n", 1)[0]
    if isinstance(parse_response_head(head), Rejection) or b"\r\n\r\n" not in answer:
        assert got[0][0] == 502, (answer, got)
