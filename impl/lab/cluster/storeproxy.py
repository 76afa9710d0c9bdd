"""A delaying TCP forwarder in front of a region's dedup store (``store_latency`` on a real cluster).

Why this module exists: the simulator's ``store_latency`` fault makes every dedup store
call of a region take ``ms`` longer. This kernel has no ``tc netem`` (``unknown qdisc``) to
delay packets, so a region whose scenario names the fault reaches its Redis or PostgreSQL
through this process instead, in the region's own network namespace: every byte the client
sends is held ``delay`` before it is passed on (in order), the store's answers pass at once.
So each request/answer round trip takes ``delay`` longer: a Redis call of the server (one
pipeline or script per store call) exactly that; a PostgreSQL call twice (the pool's check of
the connection, then its pipelined transaction). A delay of 0 passes bytes on as they come.

The delay is a number of milliseconds in the file ``--delay-file`` (missing or empty: 0),
read again at SIGUSR1; each reading is logged as a JSON line ``{"event": "delay_set", "ms":
..., "ts": ...}`` to ``--log`` (the runner waits for it), after ``{"event": "listening"}``
at the start. A connection the store closes or resets is closed to the client the same way
(an outage of the store stays an outage: ``store_down`` acts on the port the server uses).

Run as ``python -m flk.impl.lab.cluster.storeproxy --listen PORT --to HOST:PORT
--delay-file F --log L``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

CHUNK = 65536


def read_delay(path: Path) -> float:
    """The delay in seconds the file asks for: a number of milliseconds >= 0 (missing, empty or
    not a number: 0)."""
    try:
        text = path.read_text().strip()
        ms = float(text) if text else 0.0
    except (OSError, ValueError):
        return 0.0
    return ms / 1000.0 if ms > 0 and ms == ms and ms != float("inf") else 0.0


class Proxy:
    """Accepts on ``listen`` and forwards each connection to ``upstream``, client bytes held
    ``delay_s`` (read when the connection's bytes arrive: a delay set later holds later bytes)."""

    def __init__(self, upstream: tuple[str, int], delay_file: Path, log) -> None:
        self.upstream, self.delay_file, self.log = upstream, delay_file, log
        self.delay_s = read_delay(delay_file)
        self.writers: set[asyncio.StreamWriter] = set()  # the open connections' (closed at the stop)

    def close_all(self) -> None:
        """Abort every open connection: their handlers end on their own (Python 3.11's stream
        server logs a traceback for a handler cancelled at the loop's close)."""
        for w in list(self.writers):
            _abort(w)

    def reload(self) -> None:
        self.delay_s = read_delay(self.delay_file)
        self.log({"event": "delay_set", "ms": round(self.delay_s * 1000.0, 3)})

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.writers.add(c_writer)
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # the store refuses or is unreachable: so is the client's connection
            self.writers.discard(c_writer)
            _abort(c_writer)
            return
        self.writers.add(u_writer)
        held: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._hold(c_reader, held)),
                 asyncio.ensure_future(self._release(held, u_writer)),
                 asyncio.ensure_future(_pipe(u_reader, c_writer))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (u_writer, c_writer):
            self.writers.discard(w)
            _abort(w)

    async def _hold(self, reader: asyncio.StreamReader, held: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(CHUNK)
            held.put_nowait((loop.time() + self.delay_s, data))
            if not data:
                await asyncio.Event().wait()  # the release of the end closes the connection

    async def _release(self, held: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await held.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                return
            writer.write(data)
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            return
        writer.write(data)
        await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - already closed
        pass


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay_file: Path, log) -> None:
    proxy = Proxy(upstream, delay_file, log)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.reload)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(proxy.handle, *listen, reuse_address=True)
    log({"event": "listening", "port": listen[1], "ms": round(proxy.delay_s * 1000.0, 3)})
    async with server:
        await stop.wait()
        server.close()
        proxy.close_all()
        for _ in range(100):  # the handlers see their connections end
            if not proxy.writers:
                break
            await asyncio.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flk.impl.lab.cluster.storeproxy", description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="[HOST:]PORT to accept on (default host 0.0.0.0)")
    p.add_argument("--to", required=True, help="HOST:PORT of the store")
    p.add_argument("--delay-file", required=True, type=Path, help="milliseconds to hold client bytes (SIGUSR1 rereads)")
    p.add_argument("--log", required=True, type=Path, help="JSON lines: listening, delay_set")
    a = p.parse_args(argv)
    listen = _parse_hostport(a.listen if ":" in a.listen else f"0.0.0.0:{a.listen}")

    def log(doc: dict) -> None:
        with open(a.log, "a") as f:
            f.write(json.dumps({**doc, "ts": time.time()}) + "\n")

    asyncio.run(serve(listen, _parse_hostport(a.to), a.delay_file, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
