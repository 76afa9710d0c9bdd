"""schemathesis against the live server's /openapi.json: no 5xx, every response matches the schema.

The schema is fetched from the running ``flk serve`` (so the served document is
the one tested); for each operation Hypothesis draws cases in both positive
(schema-valid) and negative (schema-violating) generation modes, sends them to
the real server, and schemathesis checks the answers.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as core_checks
from schemathesis.specs.openapi import checks as oa_checks

from .proc import ServerProc

pytestmark = pytest.mark.server

CHECKS = [
    core_checks.not_a_server_error,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_headers_conformance,
    oa_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    srv = ServerProc(tmp_path_factory.mktemp("schemathesis"), {"PCS_HMAC_KEY": "schemathesis-key-0123456789"})
    srv.start()
    yield srv
    srv.stop()
    srv.kill()


@pytest.fixture(scope="module")
def operations(live_server):
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    # schemathesis leaves out the schema's own path (/openapi.json); the rest must all be there
    assert {op.label for op in ops} == set(LABELS)
    return {op.label: op for op in ops}


LABELS = ["POST /v1/pcs/submit", "GET /health", "GET /ready", "GET /metrics"]


@pytest.mark.parametrize(
    "label, mode",
    [(label, GenerationMode.POSITIVE) for label in LABELS] + [("POST /v1/pcs/submit", GenerationMode.NEGATIVE)],
)
def test_api_conforms_to_openapi(live_server, operations, label, mode) -> None:
    op = operations[label]
    statuses = []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=30 if label.startswith("POST") else 5, deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        resp = case.call_and_validate(base_url=live_server.url, checks=CHECKS)
        statuses.append(resp.status_code)

    run()
    assert statuses and all(s < 500 for s in statuses)
    if label.startswith("POST"):
        assert any(400 <= s < 500 for s in statuses)  # the cases did reach the pipeline's checks
