"""application/problem+json (RFC 9457) responses the *server* itself produces.

The verify pipeline builds its own problem responses (400, 401, 409, 429, 503,
...); the server adds only the ones that happen outside it: 404, 405, 413,
415, 429 from the concurrency limit, 401 on /metrics, 503 from /ready and 500
for an unexpected failure. Type URIs share one base so clients can switch on
them; ``spec/openapi.yaml`` lists every one.
"""

from __future__ import annotations

import json

from starlette.responses import Response

BASE = "urn:flk:problem:"  # the same base as the pipeline's problems
PROBLEM_JSON = "application/problem+json"

TITLES = {
    "not-found": "Not Found",
    "method-not-allowed": "Method Not Allowed",
    "payload-too-large": "Payload Too Large",
    "unsupported-media-type": "Unsupported Media Type",
    "overloaded": "Too Many Requests",
    "unauthorized": "Unauthorized",
    "not-ready": "Service Unavailable",
    "internal": "Internal Server Error",
}


def problem_body(status: int, kind: str, detail: str, **extra) -> bytes:
    body = {"type": BASE + kind, "title": TITLES.get(kind, kind), "status": status, "detail": detail}
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def problem(status: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extra) -> Response:
    return Response(problem_body(status, kind, detail, **extra), status_code=status, media_type=PROBLEM_JSON,
                    headers=headers)
