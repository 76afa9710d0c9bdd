"""A deliberately broken PCS server: the negative control of the server suite.

A tiny Starlette app around the *real* verify pipeline (flk.impl.verifier.pipeline with
an in-memory store and WAL), with planted bugs of the kind real servers ship.
Each bug must make ``flk conformance server`` fail with the right case IDs;
with no bug it must pass (so the failures are the bugs', not the harness's).

Bugs:
  no-replay-header     drops ``Idempotent-Replayed`` from replays
  cache-before-verify  caches every answer by pcs_id *before* verifying (401s too) and serves the cache first
  lenient-base64       normalises ``sig`` with a lenient base64 decoder before verifying
  last-key-wins        parses with ``json.loads`` (duplicate keys: last wins) and re-serializes
  plain-errors         error answers as application/json instead of application/problem+json
  shared-dedup         dedup keyed by pcs_id only, not (tenant, pcs_id)
  no-body-limit        no 413: any body size is processed
  no-retry-after       429 answers without ``Retry-After``
  raw-body-digest      dedup by SHA-256 of the raw body instead of the canonical signed subset
  plain-415            a non-JSON Content-Type answered 415 with a text/plain body (not problem+json)
  racy-dedup           put-if-absent done as get, pause, put (not atomic): concurrent first writes both win
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import socket
import threading
import time

from flk.impl.dedup import open_store
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import Limits, Request, Verifier, run_sync
from flk.impl.verifier.tenants import from_env

BUGS = frozenset({
    "no-replay-header", "cache-before-verify", "lenient-base64", "last-key-wins", "plain-errors",
    "shared-dedup", "no-body-limit", "no-retry-after", "raw-body-digest", "plain-415",
    "racy-dedup",
})


class SharedStore:
    """A dedup store that ignores the tenant (the shared-dedup bug)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def get(self, tenant, pcs_id, now):
        return self.inner.get("shared", pcs_id, now)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        return self.inner.put_if_absent("shared", pcs_id, outcome, now, ttl_s)


class RacyStore:
    """get, then a pause, then an unconditional put: the check-then-act race (the racy-dedup bug)."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, tenant, pcs_id, now):
        return self.data.get((tenant, pcs_id))

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        seen = self.data.get((tenant, pcs_id))
        time.sleep(0.3)  # the window another request slips through (wide: the test machine is loaded)
        if seen is not None:
            return False, seen
        self.data[(tenant, pcs_id)] = outcome
        return True, outcome


def create_app(env: dict[str, str], bugs: frozenset[str] = frozenset(), token_rate: float = 0.0):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request as HttpRequest
    from starlette.responses import Response
    from starlette.routing import Route

    assert bugs <= BUGS, bugs - BUGS
    common = {"rate_per_s": token_rate, "burst": max(1.0, token_rate)} if token_rate else {}
    limit = 1 << 30 if "no-body-limit" in bugs else 64 * 1024
    verifier = Verifier(from_env(env, **common), limits=Limits(max_body_bytes=limit))
    store = RacyStore() if "racy-dedup" in bugs else open_store("memory")
    if "shared-dedup" in bugs:
        store = SharedStore(store)
    wal = MemoryWal()
    cache: dict[str, tuple[int, list, bytes]] = {}
    raw_digests: dict[str, str] = {}
    lock = threading.Lock()

    def verify(body: bytes, tenant: str | None) -> tuple[int, list, bytes]:
        resp = run_sync(verifier.handle(Request(body, tenant, {}), time.time()), wal, store)
        return resp.status, list(resp.headers), resp.body

    async def submit(request: HttpRequest) -> Response:
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if "plain-415" in bugs and ctype != "application/json":
            return Response(b"Unsupported Media Type", 415, media_type="text/plain")
        tenant = request.headers.get("x-tenant-id")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        pid = doc.get("pcs_id") if isinstance(doc, dict) else None
        with lock:
            if "cache-before-verify" in bugs and isinstance(pid, str) and pid in cache:
                status, headers, out = cache[pid]
                return Response(out, status, headers=dict(headers) | {"Idempotent-Replayed": "true"})
            small = len(body) <= limit  # the rewrites below must not hide an oversize body
            if small and isinstance(doc, dict) and "lenient-base64" in bugs and isinstance(doc.get("sig"), str):
                try:
                    raw = base64.b64decode("".join(doc["sig"].split()).replace("-", "+").replace("_", "/") + "==")
                    fixed = base64.b64encode(raw).decode()  # only the sig's text changes in the body
                    body = body.replace(json.dumps(doc["sig"]).encode(), json.dumps(fixed).encode(), 1)
                except (binascii.Error, ValueError):
                    pass
            if small and isinstance(doc, dict) and "last-key-wins" in bugs:
                body = json.dumps(doc).encode()
        # verified on a worker thread, concurrently (the pipeline is per-request; the stores are thread-safe)
        status, headers, out = await run_in_threadpool(verify, body, tenant)
        with lock:
            if "raw-body-digest" in bugs and status in (200, 202):  # after verification, but the wrong digest
                digest = hashlib.sha256(body).hexdigest()
                if raw_digests.setdefault(f"{tenant}|{pid}", digest) != digest:
                    problem = {"type": "urn:flk:problem:conflict", "title": "Conflict", "status": 409,
                               "detail": "raw body differs", "pcs_id": pid, "first_seen": 0}
                    return Response(json.dumps(problem).encode(), 409, media_type="application/problem+json")
            if "cache-before-verify" in bugs and isinstance(pid, str):
                cache[pid] = (status, headers, out)
        hdrs = dict(headers)
        if "no-replay-header" in bugs:
            hdrs.pop("Idempotent-Replayed", None)
        if "plain-errors" in bugs and status >= 400:
            hdrs["Content-Type"] = "application/json"
        if "no-retry-after" in bugs:
            hdrs.pop("Retry-After", None)
        media = hdrs.pop("Content-Type", None)
        return Response(out, status, headers=hdrs, media_type=media)

    return Starlette(routes=[Route("/v1/pcs/submit", submit, methods=["POST"])])


class ThreadedServer:
    """uvicorn on a pre-bound loopback socket, in a thread (test harness only)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("broken server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
