"""A real HTTP/1.1 server on 127.0.0.1 (free port) for the agent's tests.

Not a mock of httpx: the client under test opens real sockets to it. Two
behaviours:

* :class:`ScriptedServer` answers from a script -- a list of
  ``(status, headers, body)`` consumed in order (the last entry repeats) -- and
  records every request (path, headers, body, arrival time).
* :class:`MiniVerifier` behaves like a verifier as seen from outside: it checks
  the HMAC of the tenant named in X-Tenant-Id (401 on a bad signature),
  keeps first-write-wins outcomes per (tenant, pcs_id) (202 first, 200 +
  ``Idempotent-Replayed: true`` for the same signed subset, 409 for a different one).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flk.impl.core.canonical import canonical_bytes
from flk.impl.core.signing import verify_hmac


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:  # the client died mid-request (a test's SIGKILL): nothing arrived to answer
            self.close_connection = True
            return
        status, headers, out = self.server.owner.answer(self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class _Base:
    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        return False

    delay = 0.0  # seconds each answer waits (outside the lock), to widen crash windows

    def answer(self, path, headers, body):
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.requests.append({"path": path, "headers": {k.lower(): v for k, v in headers.items()},
                                  "body": body, "t": time.monotonic()})
            return self._answer(path, headers, body)


PROBLEM = {"content-type": "application/problem+json"}


class ScriptedServer(_Base):
    def __init__(self, script):
        super().__init__()
        self.script = list(script)

    def _answer(self, path, headers, body):
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        status, hdrs, out = entry
        return status, dict(hdrs), out


class MiniVerifier(_Base):
    def __init__(self, keys: dict[str, bytes]):
        super().__init__()
        self.keys = keys
        self.store: dict[tuple[str, str], str] = {}

    def _answer(self, path, headers, body):
        tenant = {k.lower(): v for k, v in headers.items()}.get("x-tenant-id", "default")
        try:
            pcs = json.loads(body)
            key = self.keys[tenant]
            ok = verify_hmac(pcs, pcs["sig"], [key])
            digest = hashlib.sha256(canonical_bytes(pcs)).hexdigest()
        except (ValueError, KeyError):
            return 400, PROBLEM, b'{"title":"bad request"}'
        if not ok:
            return 401, PROBLEM, b'{"title":"signature invalid"}'
        k = (tenant, pcs["pcs_id"])
        if k not in self.store:
            self.store[k] = digest
            return 202, {"content-type": "application/json"}, b'{"accepted":true}'
        if self.store[k] == digest:
            return 200, {"content-type": "application/json", "idempotent-replayed": "true"}, b'{"accepted":true}'
        return 409, PROBLEM, b'{"title":"conflict"}'
