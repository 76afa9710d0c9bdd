"""The real router: an asyncio HTTP/1.1 load balancer in front of the regions' ``flk serve``.

Why this module exists: with ``[routing]`` a client knows one name and the router picks the region
per request from its health checks, so the RTO of a region loss is detection + switch + first
success. On a real cluster that must be a real process the requests go through, probing the real
servers over the real network, or the figure is the clients' own failover, not the router's. This
module is a driver only: every decision is :class:`flk.impl.router.health.HealthTable`'s (the
simulator's router, :mod:`flk.sim.routing`, drives the same class) and every byte of framing is
judged by :mod:`flk.impl.router.wire`.

``python -m flk.impl.router.proxy`` listens on one address. Every ``interval`` it sends
``GET /ready`` to every region over a fresh connection (a check fails on a refused or cut
connection, a non-200 answer or no answer within ``timeout``: :func:`~flk.impl.router.health.check_passed`).
A request's home region is its ``X-Flk-Home`` header (removed before forwarding); the request is
forwarded over a keep-alive connection to :meth:`HealthTable.resolve`'s region and the answer is
relayed with ``X-Flk-Region: <region>`` added. It never retries on another region: a region that
does not answer (refused, reset, ``upstream_timeout``, a malformed answer) is answered ``502``
(with ``X-Flk-Region``), which the real client treats as a transport failure; the next attempt is
routed again. Bytes it cannot frame get ``400`` / ``413`` / ``431`` / ``501`` problem answers and
the connection is closed. ``GET /_router/status`` gives the table and the requests in flight per
region. Rotation changes are written to the ``--events`` JSONL (wall-clock ``t``), which the
cluster runner turns into the simulator's ``route.down`` / ``route.up`` events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from .health import HealthTable, check_passed
from .wire import (
    MAX_BODY,
    MAX_HEAD,
    REGION_HEADER,
    Rejection,
    RequestHead,
    head_bytes,
    parse_chunk_size,
    parse_request_head,
    parse_response_head,
    problem,
)


class _Upstream:
    """Idle keep-alive connections to one region."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.inflight = 0


class _Refused(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection

    def __reduce__(self):  # pickled as __init__'s argument, as every flk exception
        return type(self), (self.rejection,)


async def _read_response_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """A region's answer head; ``_Refused`` (a 502) when it is not one the router can relay."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("no answer") from None
    got = parse_response_head(raw[:-4])
    if isinstance(got, Rejection):
        raise _Refused(got)
    return got


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = parse_chunk_size((await reader.readuntil(b"\r\n"))[:-2])
        if isinstance(size, Rejection):
            raise _Refused(size)
        if len(out) + size > MAX_BODY:
            raise _Refused(Rejection(413, "the request body is larger than the router forwards"))
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise _Refused(Rejection(400, "a chunk does not end with CRLF"))
        out += chunk[:-2]
        if size == 0:
            return bytes(out)


async def _read_response_body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]], status: int) -> bytes:
    h = dict(headers)
    if h.get(b"transfer-encoding", b"").lower() == b"chunked":
        return await _read_chunked(reader)
    if b"content-length" in h:
        n = int(h[b"content-length"])
        if not 0 <= n <= MAX_BODY:
            raise ValueError("answer body too large")
        return await reader.readexactly(n) if n else b""
    if status in (204, 304):
        return b""
    out = bytearray()  # delimited by the region closing the connection
    while len(out) <= MAX_BODY:
        data = await reader.read(MAX_BODY + 1 - len(out))
        if not data:
            return bytes(out)
        out += data
    raise ValueError("answer body too large")


class Router:
    def __init__(self, upstreams: dict[str, tuple[str, int]], table: HealthTable, interval: float, timeout: float,
                 upstream_timeout: float, events: str | None) -> None:
        self.up = {r: _Upstream(h, p) for r, (h, p) in upstreams.items()}
        self.table, self.interval, self.timeout = table, interval, timeout
        self.upstream_timeout = upstream_timeout
        self.events = open(events, "a", encoding="utf-8", buffering=1) if events else None  # noqa: SIM115
        self.counts: dict[str, dict[str, int]] = {r: {"forwarded": 0, "failed": 0} for r in upstreams}

    def log(self, **fields) -> None:
        if self.events is not None:
            self.events.write(json.dumps({"t": time.time(), **fields}, sort_keys=True) + "\n")

    # -- health checks ----------------------------------------------------------------------
    async def probe(self, region: str) -> bool:
        u = self.up[region]
        writer = None
        start = time.monotonic()
        answered = False
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(u.host, u.port)
                writer.write(f"GET /ready HTTP/1.1\r\nhost: {u.host}:{u.port}\r\nconnection: close\r\n\r\n"
                             .encode())
                parts = (await reader.readline()).split()
                answered = len(parts) >= 2 and parts[1] == b"200"
        except (OSError, TimeoutError, ValueError):
            answered = False
        finally:
            if writer is not None:
                writer.close()
        return check_passed(answered, time.monotonic() - start, self.timeout)

    async def checker(self, region: str) -> None:
        while True:
            await asyncio.sleep(self.interval)
            change = self.table.record(region, await self.probe(region))
            if change:
                self.log(event=change, region=region)

    # -- proxying ---------------------------------------------------------------------------
    async def forward(self, region: str, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        """Send one request to ``region``; (the answer's head, its body)."""
        u = self.up[region]
        now = time.monotonic()
        conn = None
        while u.idle:
            r, w, last = u.idle.pop()
            if now - last < 2.0 and not r.at_eof():
                conn = (r, w)
                break
            w.close()
        async with asyncio.timeout(self.upstream_timeout):
            if conn is None:
                conn = await asyncio.open_connection(u.host, u.port)
            reader, writer = conn
            try:
                writer.write(head + body)
                status, first, headers = await _read_response_head(reader)
                rbody = await _read_response_body(reader, headers, status)
            except BaseException:
                writer.close()
                raise
        if dict(headers).get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            u.idle.append((reader, writer, time.monotonic()))
        return head_bytes(first, headers, rbody, [(REGION_HEADER, region.encode())]), rbody

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[RequestHead, bytes] | Rejection | None:
        """The next request on a client connection, a rejection to answer, or None at a clean end."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            return Rejection(400, "the connection ended inside a request head") if exc.partial else None
        except asyncio.LimitOverrunError:
            return Rejection(431, "the request head is larger than the router reads")
        head = parse_request_head(raw[:-4])
        if isinstance(head, Rejection):
            return head
        try:
            if head.length is None:
                body = await _read_chunked(reader)
            else:
                body = await reader.readexactly(head.length) if head.length else b""
        except _Refused as exc:
            return exc.rejection
        except asyncio.IncompleteReadError:
            return Rejection(400, "the connection ended inside a request body")
        except asyncio.LimitOverrunError:
            return Rejection(400, "a chunk-size line is too long")
        return head, body

    def status(self) -> bytes:
        doc = json.dumps({"healthy": self.table.healthy, "inflight": {r: u.inflight for r, u in self.up.items()},
                          "counts": self.counts}).encode()
        return head_bytes("HTTP/1.1 200 OK", [(b"content-type", b"application/json")], doc) + doc

    async def route(self, head: RequestHead, body: bytes) -> bytes:
        """One framed request -> the whole answer (the region's, or the router's 502)."""
        if head.method == "GET" and head.target == "/_router/status":
            return self.status()
        region = self.table.resolve(head.home)
        u = self.up[region]
        u.inflight += 1
        try:
            rhead, rbody = await self.forward(region, head_bytes(head.first, head.headers, body, [
                (b"connection", b"keep-alive")]), body)
            self.counts[region]["forwarded"] += 1
            return rhead + rbody
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                IndexError, _Refused):
            self.counts[region]["failed"] += 1
            return problem(502, f"region {region} did not answer", region)
        finally:
            u.inflight -= 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                got = await self.read_request(reader)
                if got is None:
                    return
                if isinstance(got, Rejection):
                    writer.write(problem(got.status, got.detail, close=True))
                    await writer.drain()
                    return
                writer.write(await self.route(*got))
                await writer.drain()
        except OSError:
            return  # the client went away while we answered
        finally:
            writer.close()


async def serve(host: str, port: int, router: Router) -> None:
    server = await asyncio.start_server(router.handle, host, port, limit=MAX_HEAD, backlog=1024)
    checkers = [asyncio.create_task(router.checker(r)) for r in router.up]
    router.log(event="listening", host=host, port=port)
    try:
        async with server:
            await server.serve_forever()
    finally:
        for t in checkers:
            t.cancel()


def main(argv: list[str] | None = None, prog: str = "python -m flk.impl.router.proxy") -> int:
    p = argparse.ArgumentParser(prog=prog, description="health-checked HTTP/1.1 router in front of flk serve regions")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--upstream", action="append", required=True, help="REGION=HOST:PORT (repeat; order = preference)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two health checks of a region")
    p.add_argument("--timeout-ms", type=float, default=500.0, help="a health check slower than this fails")
    p.add_argument("--unhealthy", type=int, default=3, help="failed checks before a region leaves rotation")
    p.add_argument("--healthy", type=int, default=2, help="passed checks before it returns")
    p.add_argument("--upstream-timeout", type=float, default=30.0, help="seconds a forwarded request may take")
    p.add_argument("--events", help="JSONL file of rotation changes")
    a = p.parse_args(argv)
    ups = {}
    for spec in a.upstream:
        rid, _, addr = spec.partition("=")
        h, _, port = addr.rpartition(":")
        if not rid or not port.isdigit():
            p.error(f"--upstream {spec!r} is not REGION=HOST:PORT")
        ups[rid] = (h, int(port))
    host, _, port = a.listen.rpartition(":")
    if not port.isdigit():
        p.error(f"--listen {a.listen!r} is not HOST:PORT")
    try:
        table = HealthTable(list(ups), a.unhealthy, a.healthy)
    except ValueError as exc:
        p.error(str(exc))
    router = Router(ups, table, a.interval, a.timeout_ms / 1000.0, a.upstream_timeout, a.events)
    try:
        asyncio.run(serve(host, int(port), router))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
