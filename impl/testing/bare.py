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

Run: ``python -m flk.impl.testing.bare --port 0 --workers 1``; it prints one
JSON line ``{"event": "listening", "port": N}`` on stderr when ready.
"""

from __future__ import annotations

import argparse
import json
import sys

from starlette.applications import Starlette

OK = b'{"ok":true}'
BAD = b'{"ok":false}'
_HEADERS = [(b"content-type", b"application/json")]

fallback = Starlette(routes=[])  # 404 for every other path


async def _starlette_submit(request):
    from starlette.responses import Response

    try:
        json.loads(await request.body())
        return Response(OK, 200, media_type="application/json")
    except ValueError:
        return Response(BAD, 400, media_type="application/json")


def _starlette_app():
    from starlette.routing import Route

    return Starlette(routes=[Route("/v1/pcs/submit", _starlette_submit, methods=["POST"])])


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
        json.loads(b"".join(chunks))
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
    p = argparse.ArgumentParser(prog="flk-bare")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--starlette", action="store_true", help="a plain Starlette route instead of raw ASGI")
    a = p.parse_args(argv)
    from ..server.supervisor import bind_socket, serve_app_factory

    sock = bind_socket(a.host, a.port)
    print(json.dumps({"event": "listening", "port": sock.getsockname()[1]}), file=sys.stderr, flush=True)
    return serve_app_factory("flk.impl.testing.bare:make_app", ("starlette",) if a.starlette else (), sock,
                             a.workers)


def make_app(*args):
    return _starlette_app() if "starlette" in args else app


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
