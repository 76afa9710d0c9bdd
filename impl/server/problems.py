"""Starlette responses for the problem catalog (RFC 9457, application/problem+json).

Why this module exists: the server and the HTTP endpoints it mounts answer
with Starlette ``Response`` objects; the slugs, statuses, titles and the body
come from the one catalog, :mod:`flk.impl.verifier.problems`. This module only
wraps a catalog body in a response (404, 405, 413, 429 from the concurrency
limit, 401 on /metrics, 503 from /ready, 500 for an unexpected failure, and
the replication and shard ops endpoints' answers).
"""

from __future__ import annotations

from starlette.responses import Response

from ..verifier.problems import CONTENT_TYPE, problem_body, problem_type

PROBLEM_JSON = CONTENT_TYPE


def problem(slug: str, detail: str, headers: dict[str, str] | None = None, **extra) -> Response:
    """The problem+json response of catalog ``slug`` (its status from the catalog)."""
    return Response(problem_body(slug, detail, **extra), status_code=problem_type(slug).status,
                    media_type=PROBLEM_JSON, headers=headers)


def problem_for_status(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An HTTP error raised inside the framework, as the catalog problem of its status
    class (404 not-found, 405 method-not-allowed, other 4xx bad-request, else internal)."""
    slug = {404: "not-found", 405: "method-not-allowed"}.get(status)
    if slug is None:
        slug = "bad-request" if 400 <= status < 500 else "internal"
    return problem(slug, detail, headers=headers)
