"""Every header and every route is a total function.

A real ``flk serve`` on loopback, once with the operator credential and tenant
keys configured (multi-tenant, replication on so the authoritative read is
live) and once without (single tenant, loopback-only operator). Hypothesis
sends raw HTTP/1.1 requests to every route of the route table with arbitrary
Unicode and byte strings -- non-ASCII digits (``²``, ``٣``), 400-digit numbers,
empty values, duplicated fields -- in every header the server reads, on top
of valid credentials or none. Every request gets an answer; no answer is a
500 or a 5xx other than a configuration state of the route; no traceback and
no ``unhandled`` line reaches the log.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.server.app import create_app
from flk.impl.server.auth import sign_read
from flk.impl.server.config import load_config
from flk.impl.testing.workload import bodies

from .proc import ServerProc

pytestmark = pytest.mark.server

KEY_A = "tenant-a-key-0123456789abcdef"
SINGLE_KEY = "0123456789abcdef0123456789abcdef"
OPERATOR = ("ops", "operator-pass-0123")
PCS_ID = "ab" * 32

# every request header the server (its guard, uvicorn, the app, auth, the routes) reads
READ_HEADERS = ("x-tenant-id", "x-flk-date", "x-flk-signature", "authorization", "content-length",
                "transfer-encoding", "content-type", "connection", "expect", "host")
# 5xx answers that state the configuration of a route, not a failure (the catalog's slugs)
# (and 501 unsupported-transfer-coding: RFC 9112's answer to a coding the server does not decode)
CONFIG_STATES = {"urn:flk:problem:replication-disabled", "urn:flk:problem:sharding-disabled",
                 "urn:flk:problem:migration-disabled",
                 "urn:flk:problem:unsupported-transfer-coding"}

NASTY = ["²", "٣", "１２", "9" * 400, "9" * 5000, "-1", "+1", " 1", "1 ", "", "0", "1e9", "0x10",
         "1_000", "NaN", "inf", "\u0000", "Basic ", "Basic " + "=" * 7, "Basic ²", "chunked", "gzip, chunked",
         "chunked, chunked", "identity", "close", "keep-alive", "100-continue", "a" * 300, "é" * 40]


def header_values() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(NASTY).map(lambda s: s.encode("utf-8")),
        st.sampled_from(NASTY).map(lambda s: s.encode("latin-1", "replace")),  # the server decodes latin-1
        st.text(alphabet="0123456789\xb2\xb3\xb9\u0663", max_size=30).map(lambda s: s.encode("latin-1", "replace")),
        st.text(max_size=40).map(lambda s: s.encode("utf-8")),
        st.binary(max_size=40),
        st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: str(n).encode()),
        st.integers(min_value=10**300, max_value=10**420).map(lambda n: str(n).encode()),  # overflows a float
        st.integers(min_value=0, max_value=2**70).map(lambda n: str(int(time.time()) + n).encode()),
    )


def route_table(cfg_env: dict) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled (the app is
    built, not started: the route table is the same in every configuration)."""
    app = create_app(load_config(cfg_env), 0)
    out = []
    for route in app.routes:
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            out.append((method, route.path.replace("{pcs_id}", PCS_ID).replace("{tenant}", "a")))
    return out


def raw_request(port: int, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\n".encode() + b"host: 127.0.0.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    if not any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers):
        head += b"content-length: " + str(len(body)).encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head + b"connection: close\r\n\r\n" + body)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


def check_answer(data: bytes, what: str) -> None:
    assert data.startswith(b"HTTP/1.1 "), f"no answer to {what}: {data[:200]!r}"
    status = int(data[9:12])
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:  # a header value with CRLFs in it makes a second request:
        name, _, value = line.partition(b":")  # read only the first answer's body
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            body = body[: int(value.strip())]
    assert status != 500, f"500 for {what}: {body[:300]!r}"
    if status >= 500:
        assert json.loads(body)["type"] in CONFIG_STATES, f"{status} for {what}: {body[:300]!r}"


CONFIGS = {
    "credentials": {"MULTI_TENANT": "1", "TENANTS": f"a:hmac:{KEY_A}", "OPERATOR_USER": OPERATOR[0],
                    "OPERATOR_PASS": OPERATOR[1], "CRR_STORE_DIR": "objects", "CRR_SHIP_INTERVAL_S": "0.2"},
    "none": {"PCS_HMAC_KEY": SINGLE_KEY},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def served(request, tmp_path_factory):
    cwd = tmp_path_factory.mktemp(f"headers-{request.param}")
    # short header/body deadlines: a Content-Length or chunked body that never comes is 408 soon
    env = {"WAL_GROUP_DELAY_MS": "0", "HEADER_TIMEOUT_S": "0.5", "BODY_TIMEOUT_S": "0.3", **CONFIGS[request.param]}
    if "CRR_STORE_DIR" in env:
        env["CRR_STORE_DIR"] = str(cwd / "objects")
    srv = ServerProc(cwd, env)
    srv.start()
    key = (KEY_A if request.param == "credentials" else SINGLE_KEY).encode()
    yield request.param, srv, None, bodies(key, 3)
    srv.stop()
    srv.kill()
    log = srv.log_text()
    assert "Traceback" not in log and '"event":"unhandled"' not in log, log[-3000:]


def credential_headers(config: str, method: str, path: str) -> list[tuple[bytes, bytes]]:
    """The valid credentials of ``path`` (operator for operator routes, a signed tenant
    read for the authoritative read, none for public routes or without a configuration)."""
    if config == "none" or path in PUBLIC:
        return []
    if not path.endswith("/authoritative"):
        token = base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode())
        return [(b"authorization", b"Basic " + token)]
    signed = sign_read(method, path.split("?")[0], "a", time.time(), hmac_key=KEY_A.encode())
    return [(k.lower().encode(), v.encode()) for k, v in signed.items()]


PUBLIC = {"/v1/pcs/submit", "/health", "/ready", "/openapi.json"}


ROUTES = route_table({"DATA_DIR": "/nonexistent/flk-route-probe", "PCS_HMAC_KEY": SINGLE_KEY})


@pytest.mark.parametrize("header", READ_HEADERS)
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p[:40]}" for m, p in ROUTES])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_header_value_on_any_route_is_answered_without_a_5xx(served, method, path, header, data) -> None:
    """``header`` set to arbitrary values (once or repeated) on a request that carries the
    valid credentials of its route otherwise (the configured server's operator or tenant
    signature; the unconfigured server's loopback rule), plus arbitrary other headers."""
    config, srv, _, valid = served
    if path == "/api/shards/sample":
        path += "?seed=" + data.draw(st.sampled_from(["0", str(2**63), str(2**64 + 5), "-1", "²", "9" * 400]))
    values = data.draw(st.lists(header_values(), min_size=1, max_size=3), label="values")
    name = header.encode()
    headers = [(k, v) for k, v in credential_headers(config, method, path) if k != name]
    headers += [(name, v) for v in values]
    headers += data.draw(st.lists(st.tuples(st.sampled_from(READ_HEADERS).map(str.encode), header_values()),
                                  max_size=2), label="others")
    body = data.draw(st.sampled_from([b"", *valid, b"{", b"\xff" * 10]), label="body") if method == "POST" else b""
    check_answer(raw_request(srv.port, method, path, headers, body), f"{method} {path} {headers!r}")


@pytest.mark.parametrize("date", ["²", "٣", "9" * 400, "9" * 5000, "1" * 13, "", "-5", "+5", " 5"])
def test_flk_date_that_is_no_unix_seconds_is_401_on_the_authoritative_read(served, date) -> None:
    """The two X-Flk-Date values that were a 500 (``²``, a 400-digit number) and their kin."""
    config, srv, _, _ = served
    path = f"/v1/pcs/{PCS_ID}/authoritative"
    signed = [(k.lower().encode(), v.encode()) for k, v in
              sign_read("GET", path, "a", time.time(), hmac_key=KEY_A.encode()).items() if k != "X-Flk-Date"]
    raw = date.encode("latin-1") if date.isascii() or date == "²" else date.encode()  # ² as the byte 0xb2
    data = raw_request(srv.port, "GET", path, [*signed, (b"x-flk-date", raw)], b"")
    check_answer(data, f"X-Flk-Date {date[:20]!r}")
    status = int(data[9:12])
    # with the operator configured, a remote-less loopback client is no operator: 401;
    # without it, loopback clients are operators and the read passes the check
    assert status == (401 if config == "credentials" else 503), data[:300]
    if status == 401:
        assert re.search(rb"X-Flk-Date", data)


@pytest.mark.parametrize("seed", [str(2**63), str(2**64 + 5), "9" * 400, "9" * 5000, "-1", "²", "1.5"])
def test_shard_sample_seed_out_of_range_is_400(tmp_path, seed) -> None:
    """``GET /api/shards/sample?seed=`` >= 2^63 was a 500 (SQLite refuses the integer)."""
    from starlette.testclient import TestClient

    shards = ",".join(f"s{i}=sqlite:///{tmp_path}/shard{i}.sqlite3" for i in range(2))
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "PCS_HMAC_KEY": SINGLE_KEY, "DEDUP_BACKEND": "sharded",
                       "DEDUP_SHARDS": shards})
    with TestClient(create_app(cfg, 0), raise_server_exceptions=False, client=("127.0.0.1", 5)) as client:
        assert client.post("/v1/pcs/submit", content=bodies(SINGLE_KEY.encode(), 1)[0]).status_code == 200
        top = client.get("/api/shards/sample", params={"seed": str(2**63 - 1)})
        assert top.status_code == 200 and len(top.json()["entries"]) == 1
        resp = client.get("/api/shards/sample", params={"seed": seed})
        assert resp.status_code == 400 and resp.json()["type"] == "urn:flk:problem:invalid-query", resp.text
