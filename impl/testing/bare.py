"""The benchmark's baseline: a bare Starlette handler that only parses the JSON.

Why this module exists: ``flk bench serve`` reports the real server's
throughput *relative to* the cheapest Starlette app on the same stack
(uvicorn + uvloop + httptools, same worker count, same load), so the ratio
says what the verify pipeline, the WAL and the store cost -- independent of
how loaded the shared machine is at that moment.

Run: ``python -m flk.impl.testing.bare --port 0 --workers 1``; it prints one
JSON line ``{"event": "listening", "port": N}`` on stderr when ready.
"""

from __future__ import annotations

import argparse
import json
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def submit(request: Request) -> Response:
    try:
        json.loads(await request.body())
    except ValueError:
        return Response(b'{"ok":false}', status_code=400, media_type="application/json")
    return Response(b'{"ok":true}', status_code=200, media_type="application/json")


app = Starlette(routes=[Route("/v1/pcs/submit", submit, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flk-bare")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    from ..server.supervisor import bind_socket, serve_app_factory

    sock = bind_socket(a.host, a.port)
    print(json.dumps({"event": "listening", "port": sock.getsockname()[1]}), file=sys.stderr, flush=True)
    return serve_app_factory("flk.impl.testing.bare:make_app", (), sock, a.workers)


def make_app(*_args) -> Starlette:
    return app


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
