"""schemathesis against the live server's /openapi.json: no 5xx, every response matches the schema.

The schema is fetched from the running ``flk serve`` (so the served document is
the one tested); it must list every route the server has. For each operation
Hypothesis draws cases in positive (schema-valid) mode, and in negative
(schema-violating) mode for the operations with a body, sends them to the real
server, and schemathesis checks the answers. The server runs with a sharded
store, replication and an operator credential, so every route reaches its
handler: operator routes get the credential (and, once, none: 401), the
authoritative read gets a signed tenant read.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as core_checks
from schemathesis.specs.openapi import checks as oa_checks

from flk.impl.server.auth import sign_read

from .proc import ServerProc

KEY = "schemathesis-key-0123456789"
OPERATOR = ("ops", "schemathesis-operator-pass")

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
    root = tmp_path_factory.mktemp("schemathesis")
    from flk.impl.lab.cli import main

    old = ",".join(f"s{i}=sqlite:///{root}/shard{i}.sqlite3" for i in range(2))
    state = str(root / "migration.json")  # a planned 2 -> 3 shard migration: the operator routes are live
    assert main(["dedup-migrate", "plan", "--state", state, "--old", old,
                 "--new", old + f",s2=sqlite:///{root}/shard2.sqlite3"]) == 0
    srv = ServerProc(root, {"PCS_HMAC_KEY": KEY, "DEDUP_BACKEND": "sharded", "DEDUP_MIGRATION_STATE": state,
                            "CRR_STORE_DIR": str(root / "objects"), "CRR_SHIP_INTERVAL_S": "0.2",
                            "OPERATOR_USER": OPERATOR[0], "OPERATOR_PASS": OPERATOR[1]})
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


LABELS = ["POST /v1/pcs/submit", "GET /health", "GET /ready", "GET /metrics",
          "GET /v1/pcs/{pcs_id}/authoritative", "GET /v1/crr/status", "GET /v1/crr/conflicts",
          "POST /v1/crr/decisions", "GET /api/shards/distribution", "GET /api/shards/health",
          "GET /api/shards/sample", "GET /api/shards/find", "GET /api/operator/migration",
          "POST /api/operator/migration/actions", "GET /api/operator/crr", "POST /api/operator/crr/actions"]
OPERATOR_ROUTES = {label for label in LABELS if "/crr/" in label or "/api/" in label or "/metrics" in label}


def credentials(case, label: str, with_auth: bool) -> dict:
    """The headers that let a case reach its handler: the operator's Basic credential,
    or a signed tenant read of the case's own path."""
    if not with_auth:
        return {}
    if label in OPERATOR_ROUTES:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(":".join(OPERATOR).encode()).decode()}
    if label.endswith("/authoritative"):
        return sign_read("GET", case.formatted_path, "default", time.time(), hmac_key=KEY.encode())
    return {}


STATUSES: dict = {}
CASES = ([(label, GenerationMode.POSITIVE, True) for label in LABELS]
         + [(label, GenerationMode.NEGATIVE, True) for label in LABELS if label.startswith("POST")]
         + [(label, GenerationMode.POSITIVE, False) for label in sorted(OPERATOR_ROUTES)]
         + [("GET /v1/pcs/{pcs_id}/authoritative", GenerationMode.POSITIVE, False)])


@pytest.mark.parametrize("label, mode, with_auth", CASES)
def test_api_conforms_to_openapi(live_server, operations, label, mode, with_auth) -> None:
    op = operations[label]
    statuses = []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=30 if label.startswith("POST") else 8, deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        resp = case.call_and_validate(base_url=live_server.url, checks=CHECKS,
                                      headers=credentials(case, label, with_auth))
        statuses.append(resp.status_code)

    run()
    assert statuses and all(s < 500 for s in statuses), statuses
    STATUSES[(label, mode.value, with_auth)] = sorted(set(statuses))
    if label.endswith("/authoritative") and with_auth:
        assert set(statuses) & {400, 404}, statuses  # signed reads reached the handler
    if label.startswith("POST"):
        assert any(400 <= s < 500 for s in statuses)  # the cases did reach the handlers' checks
    if not with_auth:
        assert set(statuses) == {401}, statuses  # the credential is configured: nothing without it
