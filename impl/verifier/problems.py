"""The problem catalog: every application/problem+json answer of the system (RFC 9457).

Why this module exists: a client switches on a problem's ``type``, so one slug
must mean one thing everywhere -- one status, one title -- whichever layer
answers (the verify pipeline, the HTTP server around it, the replication
endpoints, the shard ops endpoints). This is the one table of slugs and the one
body builder; every layer builds its problems here (the server wraps the body
in a Starlette response, :mod:`flk.impl.server.problems`). ``spec/SPEC.md``
section 9 and ``spec/openapi.yaml`` (schema ``Problem``) document the slugs.

The builder is pure (no framework): a body is ``json.dumps`` with sorted keys,
no whitespace and ASCII escaping of ``{"type", "title", "status", "detail"}``
plus the slug's extra members (``errors``, ``reasons``, ``pcs_id``,
``first_seen``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

TYPE_BASE = "urn:flk:problem:"
CONTENT_TYPE = "application/problem+json"


class ProblemType(NamedTuple):
    status: int
    title: str


CATALOG: Mapping[str, ProblemType] = {
    # the verify pipeline (SPEC.md section 9)
    "invalid-json": ProblemType(400, "Request body is not strict JSON"),
    "invalid-pcs": ProblemType(400, "PCS does not match the wire format"),
    "rejected-by-policy": ProblemType(400, "PCS rejected by a policy check"),
    "unknown-tenant": ProblemType(401, "Unknown tenant"),
    "profile-not-allowed": ProblemType(401, "Profile not allowed for this tenant"),
    "bad-signature": ProblemType(401, "Signature does not verify"),
    "unauthorized-by-policy": ProblemType(401, "PCS rejected by an authenticity check"),
    "conflict": ProblemType(409, "pcs_id already recorded with a different payload"),
    "payload-too-large": ProblemType(413, "Request body too large"),
    "rate-limited": ProblemType(429, "Tenant rate limit exceeded"),
    "quota-exceeded": ProblemType(429, "Tenant daily quota exceeded"),
    "wal-unavailable": ProblemType(503, "Inbox WAL unavailable"),
    "store-unavailable": ProblemType(503, "Dedup store unavailable"),
    # the HTTP server around the pipeline (SPEC.md section 9.1)
    "bad-request": ProblemType(400, "Bad Request"),
    "unauthorized": ProblemType(401, "Unauthorized"),
    "forbidden": ProblemType(403, "Forbidden"),
    "request-timeout": ProblemType(408, "Request Timeout"),
    "uri-too-long": ProblemType(414, "URI Too Long"),
    "headers-too-large": ProblemType(431, "Request Header Fields Too Large"),
    "too-many-connections": ProblemType(503, "Too many open connections"),
    "unsupported-transfer-coding": ProblemType(501, "Transfer coding not implemented"),
    "not-found": ProblemType(404, "Not Found"),
    "method-not-allowed": ProblemType(405, "Method Not Allowed"),
    "overloaded": ProblemType(429, "Too Many Requests"),
    "internal": ProblemType(500, "Internal Server Error"),
    "not-ready": ProblemType(503, "Service Unavailable"),
    # cross-region replication and review endpoints (SPEC.md section 11.8)
    "invalid-pcs-id": ProblemType(400, "pcs_id is not 64 lowercase hex digits"),
    "no-review-pending": ProblemType(409, "No conflict awaiting review for this key"),
    "replication-disabled": ProblemType(503, "Cross-region replication disabled"),
    # shard ops endpoints (SPEC.md section 13)
    "invalid-query": ProblemType(400, "Invalid query parameters"),
    "sharding-disabled": ProblemType(503, "Dedup store not sharded"),
    "shard-unavailable": ProblemType(503, "Dedup shard unavailable"),
    # operator endpoints (spec/OPERATOR.md)
    "migration-disabled": ProblemType(503, "No shard migration configured"),
    "migration-refused": ProblemType(409, "Migration step refused"),
    # the health-checked router in front of the regions (spec/ARCHITECTURE.md, Router)
    "region-unavailable": ProblemType(502, "The region did not answer"),
}


# The statuses a submit is answered with (SPEC.md sections 9 and 9.1: the pipeline's answers, the
# concurrency limit's 429, the server's 500 and 503): every worker exports
# flk_http_requests_total{route="/v1/pcs/submit", status} for each of them from its start, at 0, as
# the simulator's scrapes do (flk.sim.alerts). A series created by its first count would hide that
# count from rate() and increase(): after a start, the first burst of 503s or 429s would go unseen.
SUBMIT_STATUSES: tuple[int, ...] = (200, 202, 400, 401, 409, 413, 429, 500, 503)

def problem_type(slug: str) -> ProblemType:
    """The catalog entry of ``slug``; a slug missing from the catalog is a programming error."""
    try:
        return CATALOG[slug]
    except KeyError:
        raise KeyError(f"problem slug {slug!r} is not in the catalog (flk.impl.verifier.problems)") from None


def type_uri(slug: str) -> str:
    problem_type(slug)
    return TYPE_BASE + slug


def slug_of(type_value: str) -> str | None:
    """The catalog slug a ``type`` member names, None if it names none."""
    if not type_value.startswith(TYPE_BASE):
        return None
    slug = type_value[len(TYPE_BASE):]
    return slug if slug in CATALOG else None


def problem_dict(slug: str, detail: str, **extra: Any) -> dict[str, Any]:
    status, title = problem_type(slug)
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}


def problem_body(slug: str, detail: str, **extra: Any) -> bytes:
    """The JSON bytes of problem ``slug`` (status and title from the catalog)."""
    return json.dumps(problem_dict(slug, detail, **extra), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def problem_headers(retry_after: int | None = None) -> list[tuple[str, str]]:
    """Content-Type, plus Retry-After (whole seconds) when given."""
    headers = [("Content-Type", CONTENT_TYPE)]
    if retry_after is not None:
        headers.append(("Retry-After", str(int(retry_after))))
    return headers
