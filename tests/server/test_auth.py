"""Who may read what (SPEC.md 9.3): signed tenant reads of the authoritative outcome,
the operator credential on every operator endpoint, one X-Tenant-Id rule."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from flk.impl.dedup import StoredOutcome
from flk.impl.server.app import create_app
from flk.impl.server.auth import OperatorAuth, read_message, sign_read
from flk.impl.server.config import load_config
from flk.impl.testing.workload import bodies

KEY_A = "tenant-a-key-0123456789abcdef"
KEY_C = "tenant-c-key-0123456789abcdef"
ED_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ED_PUB = base64.b64encode(ED_PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
OPERATOR = ("ops", "operator-pass-0123")
REMOTE = ("198.51.100.9", 40000)


@pytest.fixture
def server(tmp_path):
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "MULTI_TENANT": "1", "WAL_GROUP_DELAY_MS": "0",
                       "TENANTS": f"a:hmac:{KEY_A},b:ed25519:{ED_PUB},c:hmac:{KEY_C}",
                       "CRR_STORE_DIR": str(tmp_path / "objects"), "CRR_SHIP_INTERVAL_S": "0.05",
                       "CRR_MODE": "manual", "OPERATOR_USER": OPERATOR[0], "OPERATOR_PASS": OPERATOR[1]})
    client = TestClient(create_app(cfg, 0), raise_server_exceptions=False, client=REMOTE)
    with client:
        yield client


def problem(resp, status: int, slug: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == "urn:flk:problem:" + slug
    return body


def wait_authoritative(client, path: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        resp = client.get(path, auth=OPERATOR, headers={"X-Tenant-Id": "a"})
        if resp.status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"the reconciler never observed the submitted PCS: {resp.text}")


def test_authoritative_read_answers_only_the_signed_tenant(server) -> None:
    body = bodies(KEY_A.encode(), 1)[0]
    assert server.post("/v1/pcs/submit", content=body, headers={"X-Tenant-Id": "a"}).status_code == 200
    path = f"/v1/pcs/{json.loads(body)['pcs_id']}/authoritative"
    wait_authoritative(server, path)
    now = time.time()
    own = server.get(path, headers=sign_read("GET", path, "a", now, hmac_key=KEY_A.encode()))
    assert own.status_code == 200 and own.json()["tenant"] == "a"
    # tenant c signs with its own key but claims to be a: refused
    forged = sign_read("GET", path, "c", now, hmac_key=KEY_C.encode()) | {"X-Tenant-Id": "a"}
    assert "does not verify" in problem(server.get(path, headers=forged), 401, "unauthorized")["detail"]
    # c's own signed read names c's key space: nothing of a's is visible
    problem(server.get(path, headers=sign_read("GET", path, "c", now, hmac_key=KEY_C.encode())), 404, "not-found")
    # an ed25519 tenant proves itself with its private key
    problem(server.get(path, headers=sign_read("GET", path, "b", now, ed25519_private=ED_PRIVATE)), 404,
            "not-found")
    # no proof, a stale date, a signature over another path, an unknown tenant
    assert problem(server.get(path, headers={"X-Tenant-Id": "a"}), 401, "unauthorized")["detail"]
    stale = sign_read("GET", path, "a", now - 3600, hmac_key=KEY_A.encode())
    assert "X-Flk-Date" in problem(server.get(path, headers=stale), 401, "unauthorized")["detail"]
    other = sign_read("GET", path.replace("/v1", "/v2"), "a", now, hmac_key=KEY_A.encode())
    problem(server.get(path, headers=other), 401, "unauthorized")
    problem(server.get(path, headers=sign_read("GET", path, "zz", now, hmac_key=KEY_A.encode())), 401, "unauthorized")
    # the operator reads any tenant's record
    assert server.get(path, headers={"X-Tenant-Id": "a"}, auth=OPERATOR).json()["tenant"] == "a"


SIGNERS = {"a": {"hmac_key": KEY_A.encode()}, "b": {"ed25519_private": ED_PRIVATE}, "c": {"hmac_key": KEY_C.encode()}}


@pytest.mark.parametrize("signer, named", [(s, n) for s in SIGNERS for n in SIGNERS])
def test_a_tenant_signing_a_read_that_names_another_tenant_is_refused(server, signer, named) -> None:
    """Tenant ``signer`` signs, with its own key, the read message naming tenant ``named``
    (``X-Tenant-Id: named``, the message's TENANT field ``named``). Only ``signer ==
    named`` is a proof; a verifier that accepted any tenant's key would pass the forged
    read of the older test, which names the signer in the message."""
    body = bodies(KEY_A.encode(), 1, seed=7)[0]
    assert server.post("/v1/pcs/submit", content=body, headers={"X-Tenant-Id": "a"}).status_code == 200
    path = f"/v1/pcs/{json.loads(body)['pcs_id']}/authoritative"
    wait_authoritative(server, path)
    headers = sign_read("GET", path, named, time.time(), **SIGNERS[signer])
    assert headers["X-Tenant-Id"] == named
    resp = server.get(path, headers=headers)
    if signer != named:
        assert "does not verify" in problem(resp, 401, "unauthorized")["detail"]
    elif named == "a":
        assert resp.status_code == 200 and resp.json()["tenant"] == "a"
    else:  # its own key space: nothing of a's is visible
        problem(resp, 404, "not-found")


def test_duplicate_tenant_header_is_400_on_every_route(server) -> None:
    body = bodies(KEY_A.encode(), 1)[0]
    headers = [("X-Tenant-Id", "a"), ("X-Tenant-Id", "c")]
    for method, path in [("POST", "/v1/pcs/submit"), ("GET", f"/v1/pcs/{'0' * 64}/authoritative")]:
        resp = server.request(method, path, content=body if method == "POST" else None, headers=headers,
                              auth=OPERATOR)
        assert "X-Tenant-Id".lower() in problem(resp, 400, "bad-request")["detail"].lower()


@pytest.mark.parametrize("method, path", [
    ("GET", "/metrics"), ("GET", "/v1/crr/status"), ("GET", "/v1/crr/conflicts"), ("POST", "/v1/crr/decisions"),
    ("GET", "/api/shards/distribution"), ("GET", "/api/shards/health"), ("GET", "/api/shards/sample"),
    ("GET", "/api/shards/find?key=" + "0" * 64), ("GET", "/api/operator/migration"),
    ("POST", "/api/operator/migration/actions"), ("GET", "/api/operator/crr"), ("POST", "/api/operator/crr/actions"),
])
def test_operator_endpoints_need_the_operator_credential(server, method, path) -> None:
    for auth in (None, ("ops", "wrong"), ("someone", OPERATOR[1])):
        resp = server.request(method, path, auth=auth)
        problem(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"].startswith("Basic")
    assert server.request(method, path, auth=OPERATOR, content=b"{}").status_code not in (401, 403)


def test_review_decision_endpoint(server) -> None:
    svc = server.app.state.server.crr
    pcs_id = "ab" * 32
    for region, digest, first_seen in (("eu", "d1", 1.0), ("us", "d2", 2.0)):
        svc.reconciler.observe("a", pcs_id, StoredOutcome(digest, 200, b"{}", first_seen, region, "p"), 3.0)
    assert [c["pcs_id"] for c in server.get("/v1/crr/conflicts", auth=OPERATOR).json()["conflicts"]] == [pcs_id]
    decide = {"tenant": "a", "pcs_id": pcs_id, "approve": True, "by": "alice"}
    problem(server.post("/v1/crr/decisions", json={**decide, "approve": "yes"}, auth=OPERATOR), 400,
            "invalid-query")
    problem(server.post("/v1/crr/decisions", content=b"not json", auth=OPERATOR), 400, "invalid-query")
    problem(server.post("/v1/crr/decisions", json={**decide, "pcs_id": "cd" * 32}, auth=OPERATOR), 409,
            "no-review-pending")
    done = server.post("/v1/crr/decisions", json=decide, auth=OPERATOR)
    assert done.status_code == 200 and (done.json()["state"], done.json()["decided_by"]) == ("resolved_manual",
                                                                                              "alice")
    problem(server.post("/v1/crr/decisions", json=decide, auth=OPERATOR), 409, "no-review-pending")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_auth_header_given_twice_is_400_whichever_comes_first(server) -> None:
    """Authorization, X-Flk-Date and X-Flk-Signature follow the X-Tenant-Id rule: twice is
    ambiguous, 400 (the first one won: bad then good was 401, good then bad 200)."""
    good, bad = _basic(*OPERATOR), _basic("ops", "wrong")
    for first, second in ((good, bad), (bad, good), (good, good)):
        for path in ("/v1/crr/status", "/metrics", f"/v1/pcs/{'0' * 64}/authoritative"):
            resp = server.get(path, headers=[("Authorization", first), ("Authorization", second),
                                             ("X-Tenant-Id", "a")])
            assert "authorization" in problem(resp, 400, "bad-request")["detail"].lower()
    path = f"/v1/pcs/{'0' * 64}/authoritative"
    signed = sign_read("GET", path, "a", time.time(), hmac_key=KEY_A.encode())
    assert server.get(path, headers=signed).status_code == 404  # signed once: read (nothing stored)
    for name in ("X-Flk-Date", "X-Flk-Signature"):
        headers = [*signed.items(), (name, signed[name])]
        assert name.lower() in problem(server.get(path, headers=headers), 400, "bad-request")["detail"].lower()


@pytest.mark.parametrize("path", ["/health/", "/metrics/", "/v1/pcs/submit/", f"/v1/pcs/{'0' * 64}/authoritative/"])
def test_a_trailing_slash_is_not_found_not_a_redirect_to_the_host_header(server, path) -> None:
    """Starlette's slash redirect answered 307 to http://<Host header><path without slash>."""
    resp = server.request("POST" if "submit" in path else "GET", path, headers={"Host": "evil.example"},
                          auth=OPERATOR, follow_redirects=False)
    problem(resp, 404, "not-found")
    assert "location" not in resp.headers


@pytest.mark.parametrize("path, body", [
    ("/v1/crr/decisions", b'{"tenant":"a","tenant":"x","pcs_id":"' + b"ab" * 32 + b'","approve":true,"by":"o"}'),
    ("/api/operator/crr/actions", b'{"op":"nothing","op":"crr.apply","regions":[],"generation":1}'),
])
def test_an_operator_body_with_a_duplicate_key_is_invalid(server, path, body) -> None:
    """Operator bodies are strict JSON like a submission's (openapi): a key twice is 400 for
    the body, not its last value silently (the decision read tenant "x" and answered 409; the
    action read op "crr.apply" and went on to its regions)."""
    detail = problem(server.post(path, content=body, auth=OPERATOR), 400, "invalid-query")["detail"]
    assert detail.startswith("body must be"), detail


def test_an_operator_read_names_a_valid_tenant_in_multi_tenant_mode(server) -> None:
    """Without X-Tenant-Id the operator's read looked in tenant "default" and answered 404 "no
    outcome seen" for a stored record; an id outside the tenant-id rule got 404 too."""
    path = f"/v1/pcs/{'0' * 64}/authoritative"
    assert "required" in problem(server.get(path, auth=OPERATOR), 400, "bad-request")["detail"]
    for bad in ("\u00e9", "a b", "x" * 129):
        resp = server.get(path, auth=OPERATOR, headers={"X-Tenant-Id": bad.encode("utf-8")})
        assert "tenant id" in problem(resp, 400, "bad-request")["detail"]
    problem(server.get(path, auth=OPERATOR, headers={"X-Tenant-Id": "a"}), 404, "not-found")  # valid: looked up


def test_operator_auth_rules_are_pure() -> None:
    open_auth = OperatorAuth("", "")
    assert open_auth.check(None, ("127.0.0.1", 1)) is None and open_auth.check(None, ("::1", 1)) is None
    assert open_auth.check(None, REMOTE).slug == "forbidden" and open_auth.check(None, None).slug == "forbidden"
    auth = OperatorAuth(*OPERATOR)
    good = "Basic " + base64.b64encode(":".join(OPERATOR).encode()).decode()
    assert auth.check(good, REMOTE) is None
    assert auth.check(None, ("127.0.0.1", 1)).slug == "unauthorized"  # configured: loopback needs it too
    assert auth.check("Basic !!!", REMOTE).slug == "unauthorized"
    assert read_message("get", "/p", "1", "t") == b"flk-read-v1\nGET\n/p\n1\nt"
