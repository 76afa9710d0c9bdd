"""The Starlette app in-process (TestClient runs the lifespan: WAL, store, replay)."""

from __future__ import annotations

import base64
import json
import pathlib
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from flk.impl.core import accel
from flk.impl.server.app import SPEC_DIR, create_app
from flk.impl.server.config import load_config
from flk.impl.storage.inbox import decode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.testing.workload import bodies

KEY = "0123456789abcdef0123456789abcdef"


def make_client(tmp_path, client=("127.0.0.1", 50000), **env):
    """A test client on loopback (like ``flk serve``'s default bind) unless ``client`` says otherwise."""
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0", **env})
    return TestClient(create_app(cfg, 0), raise_server_exceptions=False, client=client), cfg


def is_problem(resp, status: int, slug: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["type"] == "urn:flk:problem:" + slug
    return body


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_submit_accepts_then_replays_and_the_record_is_in_the_wal_first(tmp_path, backend) -> None:
    client, cfg = make_client(tmp_path, DEDUP_BACKEND=backend)
    body = bodies(KEY.encode(), 1)[0]
    with client:
        r1 = client.post("/v1/pcs/submit", content=body)
        assert r1.status_code == 200, r1.text
        assert r1.json()["accepted"] is True
        r2 = client.post("/v1/pcs/submit", content=body)
        assert r2.status_code == 200 and r2.content == r1.content
        assert r2.headers["idempotent-replayed"] == "true"
    # INV-WAL-FIRST: both requests are in the inbox WAL, verbatim
    log = SegmentedLog(cfg.worker_wal_dir(0))
    recs = [decode_inbox_record(p) for _, p in log.records()]
    log.close()
    assert [r.body for r in recs] == [body, body]


def test_every_error_is_problem_json(tmp_path) -> None:
    client, _ = make_client(tmp_path, MAX_BODY_BYTES="2048")
    with client:
        is_problem(client.get("/nope"), 404, "not-found")
        r = client.delete("/v1/pcs/submit")
        is_problem(r, 405, "method-not-allowed")
        assert "POST" in r.headers["allow"]
        is_problem(client.post("/v1/pcs/submit", content=b"x" * 5000), 413, "payload-too-large")
        is_problem(client.post("/v1/pcs/submit", content=b'{"a":1,"a":2}'), 400, "invalid-json")
        is_problem(client.post("/v1/pcs/submit", content=b"[NaN]"), 400, "invalid-json")
        p = is_problem(client.post("/v1/pcs/submit", content=b'{"pcs_id":"x"}'), 400, "invalid-pcs")
        assert {e["field"] for e in p["errors"]} >= {"pcs_id", "sig"}
        pcs = json.loads(bodies(KEY.encode(), 1)[0])
        pcs["sig"] = base64.b64encode(b"\0" * 32).decode()
        is_problem(client.post("/v1/pcs/submit", content=json.dumps(pcs)), 401, "bad-signature")
        is_problem(client.post("/v1/pcs/submit", content=json.dumps(pcs), headers={"X-Tenant-Id": "other"}),
                   401, "unknown-tenant")


def test_health_ready_openapi(tmp_path) -> None:
    client, _ = make_client(tmp_path)
    with client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        assert ready["status"] == "ready" and ready["store"] == "sqlite" and ready["breaker"] == "closed"
        doc = client.get("/openapi.json").json()
        assert doc == yaml.safe_load((SPEC_DIR / "openapi.yaml").read_text())
        assert set(doc["paths"]) == {"/v1/pcs/submit", "/health", "/ready", "/metrics", "/openapi.json",
                                     "/v1/pcs/{pcs_id}/authoritative", "/v1/crr/status", "/v1/crr/conflicts",
                                     "/v1/crr/decisions", "/api/shards/distribution", "/api/shards/health",
                                     "/api/shards/sample", "/api/shards/find", "/api/operator/migration",
                                     "/api/operator/migration/actions", "/api/operator/crr",
                                     "/api/operator/crr/actions"}


def test_metrics_basic_auth(tmp_path) -> None:
    client, _ = make_client(tmp_path, METRICS_USER="prom", METRICS_PASS="s3cret-pass")
    with client:
        client.post("/v1/pcs/submit", content=bodies(KEY.encode(), 1)[0])
        r = client.get("/metrics")
        is_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Basic")
        is_problem(client.get("/metrics", auth=("prom", "wrong")), 401, "unauthorized")
        ok = client.get("/metrics", auth=("prom", "s3cret-pass"))
        assert ok.status_code == 200
        assert 'flk_accepted_total{tenant="default"} 1.0' in ok.text
        assert "flk_inflight_limit" in ok.text and 'flk_worker_info{worker="0"} 1.0' in ok.text
        # the SQLite store checkpoints on its own thread: what it did is a metric
        for outcome in ("done", "restart", "failed"):
            assert f'flk_store_checkpoints{{outcome="{outcome}"}}' in ok.text
        # the log layout's key index in the worker's memory: the one row stored, and its table's size
        assert "flk_store_index_keys 1.0" in ok.text
        assert ("flk_store_index_bytes 16384.0" in ok.text) is (accel.entry("open_log_rows").compiled is not None)


def test_metrics_open_without_credentials_configured(tmp_path) -> None:
    """Without an operator credential, operator endpoints answer loopback clients only."""
    client, _ = make_client(tmp_path)
    with client:
        assert client.get("/metrics").status_code == 200
    remote, _ = make_client(tmp_path, client=("203.0.113.7", 40000))
    with remote:
        for path in ("/metrics", "/api/shards/distribution", "/v1/crr/status", "/v1/crr/conflicts"):
            body = is_problem(remote.get(path), 403, "forbidden")
            assert "OPERATOR_USER" in body["detail"]


def test_inv_idempotent_replay_wal_replayed_on_start_is_a_no_op(tmp_path) -> None:
    """Start, submit, stop; start again: replay of the WAL changes no stored outcome."""
    from flk.impl.dedup import open_store

    bs = bodies(KEY.encode(), 20)
    client, cfg = make_client(tmp_path)
    with client:
        first = [client.post("/v1/pcs/submit", content=b).content for b in bs]
    store = open_store(cfg.store_url())
    before = _all(store)
    store.close()
    # the clean stop wrote a checkpoint past every record (WAL checkpoints): remove it so the
    # whole WAL is replayed, as after a crash before any checkpoint
    checkpoint = pathlib.Path(cfg.worker_wal_dir(0)) / "checkpoint.json"
    assert json.loads(checkpoint.read_text())["index"] == 20
    checkpoint.unlink()
    client2, _ = make_client(tmp_path)
    with client2:
        again = [client2.post("/v1/pcs/submit", content=b).content for b in bs]
        m = client2.get("/metrics").text
    assert again == first
    assert "flk_wal_replayed_total 20.0" in m
    store = open_store(cfg.store_url())
    assert _all(store) == before
    store.close()
    # the next start replays nothing: every record is below the checkpoint
    client3, _ = make_client(tmp_path)
    with client3:
        assert [client3.post("/v1/pcs/submit", content=b).content for b in bs] == first
        assert "flk_wal_replayed_total 0.0" in client3.get("/metrics").text


def _all(store):
    import time

    out, cur = [], None
    while True:
        page, cur = store.scan(cur, 500, time.time())
        out += page
        if cur is None:
            return sorted(out, key=lambda e: (e[0], e[1]))


@given(st.binary(max_size=300))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_bodies_get_a_4xx_problem_never_5xx(tmp_path, body: bytes) -> None:
    client = _shared_client(tmp_path)
    r = client.post("/v1/pcs/submit", content=body)
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")


_CLIENTS: dict = {}


def _shared_client(tmp_path):
    key = str(tmp_path)
    if key not in _CLIENTS:
        client, _ = make_client(tmp_path)
        client.__enter__()
        _CLIENTS[key] = client
    return _CLIENTS[key]


@pytest.fixture(autouse=True, scope="module")
def _close_clients():
    yield
    for c in _CLIENTS.values():
        c.__exit__(None, None, None)
    _CLIENTS.clear()


def test_inv_tenant_isolation_multi_tenant_keys_do_not_cross(tmp_path) -> None:
    ka, kb = "tenant-a-key-0123456789abcdef", "tenant-b-key-0123456789abcdef"
    cfg = load_config({"DATA_DIR": str(tmp_path), "MULTI_TENANT": "true", "TENANTS": f"a:hmac:{ka},b:hmac:{kb}",
                       "WAL_GROUP_DELAY_MS": "0"})
    body_a = bodies(ka.encode(), 1)[0]
    with TestClient(create_app(cfg, 0)) as client:
        assert client.post("/v1/pcs/submit", content=body_a, headers={"X-Tenant-Id": "a"}).status_code == 200
        # b's keys never verify a's PCS; a missing tenant header is refused in multi-tenant mode
        is_problem(client.post("/v1/pcs/submit", content=body_a, headers={"X-Tenant-Id": "b"}), 401, "bad-signature")
        is_problem(client.post("/v1/pcs/submit", content=body_a), 401, "unknown-tenant")


def test_tenants_file_with_pii_gate_and_policy_file(tmp_path) -> None:
    from flk.impl.verifier.policy import DEFAULT_POLICY_TEXT

    key = "tenant-file-key-0123456789abcdef"
    tf = tmp_path / "tenants.toml"
    tf.write_text(f'[tenants.acme]\nalg = "hmac"\npii_mode = "block"\n[[tenants.acme.keys]]\nid = "k1"\n'
                  f'secret = "{key}"\n')
    pol = tmp_path / "policy.flk"
    pol.write_text(DEFAULT_POLICY_TEXT.replace("version 1.0.0", "version 2.5.0"))
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "MULTI_TENANT": "1", "TENANTS_FILE": str(tf),
                       "POLICY": str(pol), "WAL_GROUP_DELAY_MS": "0"})
    # the start-up config line names the file its tenants come from (it said "tenants": [])
    assert (cfg.describe()["tenants"], cfg.describe()["tenants_file"]) == ("TENANTS_FILE", str(tf))
    pcs = json.loads(bodies(key.encode(), 2)[0])
    clean = json.loads(bodies(key.encode(), 2)[1])
    pcs["meta"] = {"contact": "alice@example.com"}  # unsigned field carrying PII
    with TestClient(create_app(cfg, 0)) as client:
        ok = client.post("/v1/pcs/submit", content=json.dumps(clean), headers={"X-Tenant-Id": "acme"})
        assert ok.status_code == 200 and ok.json()["policy_version"] == "2.5.0"
        r = client.post("/v1/pcs/submit", content=json.dumps(pcs), headers={"X-Tenant-Id": "acme"})
        assert r.status_code == 400 and "pii" in r.text


def test_sharded_store_by_configuration_and_shard_ops_routes(tmp_path) -> None:
    from flk.impl.dedup import open_store

    shards = {f"s{i}": f"sqlite:///{tmp_path}/shard{i}.sqlite3" for i in range(3)}
    spec = ",".join(f"{k}={v}" for k, v in shards.items())
    client, _ = make_client(tmp_path / "d", DEDUP_BACKEND="sharded", DEDUP_SHARDS=spec)
    bs = bodies(KEY.encode(), 30)
    with client:
        assert all(client.post("/v1/pcs/submit", content=b).status_code == 200 for b in bs)
        again = client.post("/v1/pcs/submit", content=bs[0])
        assert again.headers["idempotent-replayed"] == "true"
        assert client.get("/api/shards/distribution").status_code == 200
    counts = []
    for url in shards.values():
        s = open_store(url)
        counts.append(s.count(time.time()))
        s.close()
    assert sum(counts) == 30 and all(c > 0 for c in counts)  # spread over every shard


def test_shard_routes_answer_503_problem_without_a_sharded_store(tmp_path) -> None:
    client, _ = make_client(tmp_path)
    with client:
        r = client.get("/api/shards/distribution")
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")


def test_route_table_is_honest_every_route_documented_and_submit_is_its_real_handler(tmp_path) -> None:
    """No decoy routes: the submit route's handler is the one that does the work, and every
    route of the table is in spec/openapi.yaml (so schemathesis tests it)."""
    from flk.impl.server.app import SubmitEndpoint

    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    asgi = create_app(cfg, 0)
    table = {route.path: route for route in asgi.routes}
    assert isinstance(table["/v1/pcs/submit"].app, SubmitEndpoint) or isinstance(
        table["/v1/pcs/submit"].endpoint, SubmitEndpoint)
    documented = set(yaml.safe_load((SPEC_DIR / "openapi.yaml").read_text())["paths"])
    assert set(table) == documented
    # the route, reached through the framework's routing, answers like the fast path
    from starlette.applications import Starlette

    routed = Starlette(routes=[table["/v1/pcs/submit"]], lifespan=None)
    with TestClient(asgi) as client:  # lifespan: starts the worker the endpoint uses
        fast = client.post("/v1/pcs/submit", content=bodies(KEY.encode(), 1)[0])
        slow = TestClient(routed).post("/v1/pcs/submit", content=bodies(KEY.encode(), 1)[0])
    assert fast.status_code == 200 and slow.status_code == 200 and slow.content == fast.content
