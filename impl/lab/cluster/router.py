"""The health-checked router of a real cluster: an HTTP/1.1 load balancer in front of the
regions' ``flk serve`` processes (``[routing] enabled``).

Why this module exists: with ``[routing]`` the simulator's clients know one name and a load
balancer (:mod:`flk.sim.routing`) picks the region per request from its health checks, so the
RTO of a region loss is detection + switch + first success. On a real cluster that must be a
real process the requests go through, probing the real servers over the real network, or the
figure is the clients' own failover, not the router's.

Two parts:

* :class:`HealthTable` -- the routing decisions, sans I/O (no sockets, no clock: the caller
  passes each probe's outcome): after ``unhealthy_threshold`` consecutive failed checks a
  region leaves rotation (``down``), after ``healthy_threshold`` consecutive passed checks it
  returns (``up``); a request whose client names home region H goes to H while H is in
  rotation, else to the first region in rotation in the configured order, else to H. These are
  the simulator router's rules (interval, timeout, thresholds, preference order).
* :func:`serve` -- the driver (``python -m flk.impl.lab.cluster.router``): an asyncio proxy on
  one address. Every ``interval`` it sends ``GET /ready`` to every region over a fresh
  connection (a check fails on a refused or cut connection, a non-200 answer or no answer
  within ``timeout``). A request's home region is its ``X-Flk-Home`` header (removed before
  forwarding; the agents' home, as in the simulator); the request is forwarded over a
  keep-alive connection to the chosen region and the answer is relayed with
  ``X-Flk-Region: <region>`` added. The router never retries on another region: a region that
  does not answer (refused, reset, ``upstream_timeout``) is answered ``502`` (with
  ``X-Flk-Region``), which the real client treats as it treats a transport failure (a 5xx is
  a failover/backoff, :class:`flk.impl.agent.client.Submission`); the next attempt is routed
  again. ``GET /_router/status`` gives the table and the requests in flight per region.
  Rotation changes are written to the ``--events`` JSONL (wall-clock ``t``), which the runner
  turns into the simulator's ``route.down`` / ``route.up`` events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

HOME_HEADER = b"x-flk-home"
REGION_HEADER = "x-flk-region"
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


@dataclass
class HealthTable:
    """Which regions are in rotation (sans I/O; see the module docstring)."""

    regions: list[str]
    down_after: int = 3
    up_after: int = 2
    healthy: dict[str, bool] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    oks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.regions:
            self.healthy.setdefault(r, True)
            self.fails.setdefault(r, 0)
            self.oks.setdefault(r, 0)

    def record(self, region: str, passed: bool) -> str | None:
        """One health check's outcome; returns ``"down"`` / ``"up"`` when the region changes rotation."""
        if passed:
            self.fails[region], self.oks[region] = 0, self.oks[region] + 1
            if not self.healthy[region] and self.oks[region] >= self.up_after:
                self.healthy[region] = True
                return "up"
        else:
            self.oks[region], self.fails[region] = 0, self.fails[region] + 1
            if self.healthy[region] and self.fails[region] >= self.down_after:
                self.healthy[region] = False
                return "down"
        return None

    def resolve(self, home: str | None) -> str:
        """The region a request from a client whose home is ``home`` goes to."""
        pref = ([home] if home in self.healthy else []) + [r for r in self.regions if r != home]
        for r in pref:
            if self.healthy[r]:
                return r
        return pref[0]


# -- the driver ---------------------------------------------------------------------------------

class _Upstream:
    """Idle keep-alive connections to one region."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.inflight = 0


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[bytes, bytes]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.append((k.strip().lower(), v.strip()))
    return lines[0].decode("latin-1"), headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]], response: bool,
                     status: int = 200) -> bytes:
    h = dict(headers)
    if h.get(b"transfer-encoding", b"").lower() == b"chunked":
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            out += chunk[:-2]
            if size == 0:
                return bytes(out)
    if b"content-length" in h:
        n = int(h[b"content-length"])
        if n > MAX_BODY:
            raise ValueError("body too large")
        return await reader.readexactly(n) if n else b""
    if response and status >= 200 and status not in (204, 304):
        return await reader.read(MAX_BODY)
    return b""


def _head(first: str, headers: list[tuple[bytes, bytes]], body: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    skip = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", HOME_HEADER}
    lines = [first.encode("latin-1")] + [k + b": " + v for k, v in headers if k not in skip]
    lines += [k + b": " + v for k, v in extra] + [b"content-length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


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
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(u.host, u.port)
                writer.write(f"GET /ready HTTP/1.1\r\nhost: {u.host}:{u.port}\r\nconnection: close\r\n\r\n"
                             .encode())
                line = await reader.readline()
                parts = line.split()
                return len(parts) >= 2 and parts[1] == b"200"
        except (OSError, TimeoutError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.close()

    async def checker(self, region: str) -> None:
        while True:
            await asyncio.sleep(self.interval)
            change = self.table.record(region, await self.probe(region))
            if change:
                self.log(event=change, region=region)

    # -- proxying ---------------------------------------------------------------------------
    async def forward(self, region: str, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        """Send one request to ``region``; (response head without its final CRLF, body)."""
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
                got = await _read_head(reader)
                if got is None:
                    raise ConnectionResetError("no answer")
                first, headers = got
                status = int(first.split()[1])
                rbody = await _read_body(reader, headers, True, status)
            except BaseException:
                writer.close()
                raise
        if dict(headers).get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            u.idle.append((reader, writer, time.monotonic()))
        return _head(first, headers, rbody, [(REGION_HEADER.encode(), region.encode())]), rbody

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                got = await _read_head(reader)
                if got is None:
                    return
                first, headers = got
                body = await _read_body(reader, headers, False)
                method, _, rest = first.partition(" ")
                path = rest.split(" ")[0]
                if method == "GET" and path == "/_router/status":
                    doc = json.dumps({"healthy": self.table.healthy,
                                      "inflight": {r: u.inflight for r, u in self.up.items()},
                                      "counts": self.counts}).encode()
                    writer.write(_head("HTTP/1.1 200 OK", [(b"content-type", b"application/json")], doc, []) + doc)
                    await writer.drain()
                    continue
                home = dict(headers).get(HOME_HEADER, b"").decode("latin-1") or None
                region = self.table.resolve(home)
                u = self.up[region]
                u.inflight += 1
                try:
                    rhead, rbody = await self.forward(region, _head(first, headers, body, [
                        (b"connection", b"keep-alive")]), body)
                    self.counts[region]["forwarded"] += 1
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                    self.counts[region]["failed"] += 1
                    rbody = json.dumps({"type": "about:blank", "title": "Bad Gateway", "status": 502,
                                        "detail": f"region {region} did not answer"}).encode()
                    rhead = _head("HTTP/1.1 502 Bad Gateway", [(b"content-type", b"application/problem+json")],
                                  rbody, [(REGION_HEADER.encode(), region.encode())])
                finally:
                    u.inflight -= 1
                writer.write(rhead + rbody)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flk.impl.lab.cluster.router",
                                description="health-checked HTTP/1.1 router in front of flk serve regions")
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
        ups[rid] = (h, int(port))
    table = HealthTable(list(ups), a.unhealthy, a.healthy)
    host, _, port = a.listen.rpartition(":")
    router = Router(ups, table, a.interval, a.timeout_ms / 1000.0, a.upstream_timeout, a.events)
    try:
        asyncio.run(serve(host, int(port), router))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
