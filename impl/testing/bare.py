"""The benchmark's baseline: a bare handler that only reads the body and parses the JSON.

Why this module exists: ``flk bench serve`` reports the real server's
throughput and CPU per request *relative to* the cheapest handler on the same
stack -- uvicorn + uvloop + httptools with the server's own HTTP protocol class
(:mod:`flk.impl.server.httpguard`, via :func:`flk.impl.server.supervisor.serve_app_factory`),
the same worker count, the same load -- so the ratio says what the verify
pipeline, the WAL, the store and the server's own plumbing cost, independent
of how loaded the shared machine is at that moment.

It is dispatched the way the server dispatches its submit route: ``POST
/v1/pcs/submit`` as raw ASGI (the server's fast path skips Starlette's request
and response objects too), every other path through a Starlette app (404/405).
The handler reads the whole body, ``json.loads`` it and answers ``200
{"ok":true}`` (``400 {"ok":false}`` for bad JSON) with a ``content-length``.

``--starlette`` serves the same handler as a plain Starlette route instead
(``Request.body()`` and a ``Response``): the "bare Starlette" anchor the
benchmarks report beside the raw-ASGI bare handler.

``--durable DIR`` (with ``--starlette``) adds the least a server that answers only
after a durable append (INV-WAL-FIRST) must do: the route appends the body to its
worker's log file in ``DIR`` and answers once an ``fdatasync`` that began after
the append has returned. Syncs are group commits with natural batching
(:class:`GroupSync`: no delay, one sync at a time on a thread, what was appended
while one ran is covered by the next, which starts as soon as it ends) -- no
parsing beyond ``json.loads``, no verification, no store. ``flk bench serve`` reports
it beside the server's as a reference -- what a plain durable Starlette handler keeps
of bare Starlette's req/s on this disk -- not as a ceiling: a server that forms its
batches better keeps more (``flk serve``, whose batch takes what queued during its
hand-off, does).

Run: ``python -m flk.impl.testing.bare --port 0 --workers 1``; it prints one
JSON line ``{"event": "listening", "port": N}`` on stderr when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from starlette.applications import Starlette

from ..core import textdata

OK = b'{"ok":true}'
BAD = b'{"ok":false}'
_HEADERS = [(b"content-type", b"application/json")]

fallback = Starlette(routes=[])  # 404 for every other path


def _starlette_app(directory: str | None = None):
    """The bare Starlette route; with ``directory``, the durable variant (``--durable``: the
    body appended to the worker's log there, answered after a :class:`GroupSync` sync)."""
    from starlette.responses import Response
    from starlette.routing import Route

    log: list[GroupSync] = []  # made on the worker's loop, at its first request

    async def submit_route(request):
        body = await request.body()
        try:
            textdata.json_loads(body)
        except ValueError:
            return Response(BAD, 400, media_type="application/json")
        if directory is not None:
            if not log:
                log.append(GroupSync(os.path.join(directory, f"worker-{os.getpid()}.log")))
            try:
                await log[0].append(body + b"\n")
            except OSError:
                return Response(BAD, 503, media_type="application/json")
        return Response(OK, 200, media_type="application/json")

    return Starlette(routes=[Route("/v1/pcs/submit", submit_route, methods=["POST"])])


class GroupSync:
    """Appends to one file, each released after an ``fdatasync`` that began after it
    (event loop only; the sync runs on the loop's default executor thread). A sync starts
    when something was appended and none runs; appends made while one runs wait for the
    next (natural batching, no delay). ``syncs`` and ``appends`` count what happened."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.waiting: list[asyncio.Future] = []
        self.running = False
        self.syncs = 0
        self.appends = 0

    async def append(self, data: bytes) -> None:
        os.write(self.fd, data)
        self.appends += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        if not self.running:
            self._start()
        await fut

    def _start(self) -> None:
        covered, self.waiting = self.waiting, []
        self.running = True
        self.syncs += 1
        done = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self.fd)
        done.add_done_callback(lambda task: self._done(covered, task))

    def _done(self, covered: list, task: asyncio.Future) -> None:
        self.running = False
        error = task.exception()
        for fut in covered:
            if not fut.done():
                fut.set_exception(error) if error is not None else fut.set_result(None)
        if self.waiting:
            self._start()


async def submit(scope, receive, send) -> None:
    chunks = []
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    try:
        textdata.json_loads(b"".join(chunks))
        status, body = 200, OK
    except ValueError:
        status, body = 400, BAD
    await send({"type": "http.response.start", "status": status,
                "headers": _HEADERS + [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/pcs/submit":
        await submit(scope, receive, send)
        return
    await fallback(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    from ..server.supervisor import CPU_AFFINITY_MODES, bind_socket, serve_app_factory

    p = argparse.ArgumentParser(prog="flk-bare")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--starlette", action="store_true", help="a plain Starlette route instead of raw ASGI")
    p.add_argument("--durable", metavar="DIR", help="with --starlette: answer after a group fdatasync of the "
                                                     "body appended to a log file in DIR")
    p.add_argument("--cpu-affinity", choices=CPU_AFFINITY_MODES, default="auto",
                   help="where the workers run, as flk serve's WORKER_CPU_AFFINITY (default auto, as flk serve)")
    a = p.parse_args(argv)
    if a.durable and not (a.starlette and os.path.isdir(a.durable)):
        p.error("--durable needs --starlette and an existing directory")

    sock = bind_socket(a.host, a.port, a.workers, reuse_port=True)  # as flk serve's default
    port = sock.getsockname()[1]
    args = ("durable", a.durable) if a.durable else ("starlette",) if a.starlette else ()
    return serve_app_factory("flk.impl.testing.bare:make_app", args, sock, a.workers, on_listening=lambda: print(
        json.dumps({"event": "listening", "port": port}), file=sys.stderr, flush=True), cpu_affinity=a.cpu_affinity)


def make_app(*args):
    if args[:1] == ("durable",):
        return _starlette_app(args[1])
    return _starlette_app() if "starlette" in args else app


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
