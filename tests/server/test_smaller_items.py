"""The smaller server reliability items, each against a real ``flk serve``
or the real app:

* ``/ready`` is 503 (naming the disk) while the inbox WAL's file system is full --
  before an append fails -- and 200 again once there is room; ``/health`` stays 200;
* the per-worker connection cap does not refuse ``/health`` or ``/ready`` probes
  (it still refuses everything else, and connections beyond twice the cap at accept);
* an ``X-Tenant-Id`` over 256 characters is 431 ``headers-too-large``, not 413;
* ``Transfer-Encoding: gzip, chunked`` (any coding but ``chunked`` alone) is 501
  ``unsupported-transfer-coding``, nothing recorded; plain chunked still works.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import httpx
import pytest
from starlette.testclient import TestClient

from flk.impl.server.app import create_app
from flk.impl.server.config import load_config
from flk.impl.testing.workload import bodies

from .proc import ServerProc
from .test_limits import read_answer

pytestmark = pytest.mark.server

KEY = "0123456789abcdef0123456789abcdef"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if run.returncode != 0:
        msg = f"cannot mount a tmpfs: {run.stderr.decode()[:200]}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path, leave: int) -> None:
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_ready_is_503_on_a_full_disk_before_an_append_fails(small_disk) -> None:
    srv = ServerProc(small_disk / "cwd", {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(small_disk / "data"),
                                          "WAL_GROUP_DELAY_MS": "0"})
    with srv:
        ready = httpx.get(srv.url + "/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["disk"]["ok"]
        fill(small_disk, leave=64 * 1024)  # less than 2 * MAX_BODY_BYTES + 64 KiB, but appends still fit
        full = httpx.get(srv.url + "/ready", timeout=10)
        assert full.status_code == 503 and "disk" in full.json()["detail"], full.text
        assert full.json()["disk"]["ok"] is False and full.headers["retry-after"]
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
        # no append has failed yet: the WAL itself is healthy
        assert full.json()["wal"]["state"] in ("ok", "healthy", "available"), full.json()["wal"]
        os.remove(small_disk / "filler")
        again = httpx.get(srv.url + "/ready", timeout=10)
        assert again.status_code == 200, again.text


def test_health_and_ready_are_answered_over_the_connection_cap(tmp_path) -> None:
    cap = 20
    srv = ServerProc(tmp_path, {"PCS_HMAC_KEY": KEY, "MAX_CONNECTIONS": str(cap), "HEADER_TIMEOUT_S": "30"})
    idle: list[socket.socket] = []
    with srv:
        try:
            for _ in range(cap + 5):  # idle connections fill the cap
                idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            time.sleep(0.3)
            for path in ("/health", "/ready"):
                with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                    status, headers, _ = read_answer(s)
                assert status == 200, (path, status)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n")
                status, headers, body = read_answer(s)
            assert status == 503 and json.loads(body)["type"] == "urn:flk:problem:too-many-connections"
            for _ in range(cap + 5):  # beyond twice the cap: refused at accept, before any request
                idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                status, _, body = read_answer(s)
            assert status == 503 and b"too-many-connections" in body
        finally:
            for s in idle:
                s.close()
        time.sleep(0.5)
        assert httpx.get(srv.url + "/openapi.json", timeout=10).status_code == 200


@pytest.fixture
def client(tmp_path):
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    with TestClient(create_app(cfg, 0), raise_server_exceptions=False, client=("127.0.0.1", 5)) as c:
        yield c


@pytest.mark.parametrize("length", [257, 300, 5000])
def test_an_overlong_tenant_header_is_431_not_413(client, length) -> None:
    resp = client.post("/v1/pcs/submit", content=bodies(KEY.encode(), 1)[0], headers={"X-Tenant-Id": "t" * length})
    assert resp.status_code == 431, resp.text
    body = resp.json()
    assert body["type"] == "urn:flk:problem:headers-too-large" and "X-Tenant-Id" in body["detail"]
    ok = client.post("/v1/pcs/submit", content=bodies(KEY.encode(), 1)[0], headers={"X-Tenant-Id": "t" * 256})
    assert ok.status_code != 431


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "identity, chunked", "GZIP , Chunked"])
def test_a_transfer_coding_other_than_chunked_is_501_and_nothing_is_recorded(tmp_path, coding) -> None:
    srv = ServerProc(tmp_path, {"PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0"})
    body = bodies(KEY.encode(), 1, seed=31)[0]
    with srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(f"POST /v1/pcs/submit HTTP/1.1\r\nhost: x\r\ntransfer-encoding: {coding}\r\n\r\n".encode()
                      + chunked(body))
            status, headers, answer = read_answer(s)
        assert status == 501 and json.loads(answer)["type"] == "urn:flk:problem:unsupported-transfer-coding"
        assert headers["connection"] == "close"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /v1/pcs/submit HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                      b"connection: close\r\n\r\n" + chunked(body))
            status, headers, _ = read_answer(s)
        assert status == 200 and headers.get("idempotent-replayed") != "true"  # the 501 recorded nothing
