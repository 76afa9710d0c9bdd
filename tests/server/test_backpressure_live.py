"""Backpressure on the real server: 429 + Retry-After instead of a queue; breaker 503 fast."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from flk.impl.testing.workload import bodies

from .proc import ServerProc

pytestmark = pytest.mark.server
KEY = "backpressure-key-0123456789abcdef"


def test_concurrency_limit_answers_429_with_retry_after_instead_of_queueing(tmp_path) -> None:
    # the group commit waits 400 ms, so admitted requests stay in flight that long
    env = {"PCS_HMAC_KEY": KEY, "MAX_INFLIGHT": "2", "MIN_INFLIGHT": "2", "WAL_GROUP_DELAY_MS": "400"}
    bs = bodies(KEY.encode(), 8)
    with ServerProc(tmp_path, env) as srv:
        def post(b: bytes):
            r = httpx.post(srv.url + "/v1/pcs/submit", content=b, timeout=20)
            return r, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(post, bs))
        codes = sorted(r.status_code for r, _ in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
        last_ok = max(t for r, t in results if r.status_code == 200)
        for r, t in results:
            if r.status_code == 429:
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"] == "urn:flk:problem:overloaded"
                assert int(r.headers["retry-after"]) >= 1
                assert t < last_ok  # refused at once, not queued behind the admitted ones
        m = httpx.get(srv.url + "/metrics").text
        assert "flk_overloaded_total" in m and "flk_overloaded_total 0.0" not in m


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing (scripts/services.sh)")
def test_store_circuit_breaker_opens_503_fast_and_recovers_via_half_open_probe(tmp_path) -> None:
    port = _free_port()

    def redis_up() -> subprocess.Popen:
        p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                              "--appendonly", "yes", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                return p
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    redis_proc = redis_up()
    env = {"PCS_HMAC_KEY": KEY, "DEDUP_BACKEND": "redis", "REDIS_ADDR": f"127.0.0.1:{port}",
           "BREAKER_FAILURES": "2", "BREAKER_OPEN_S": "1"}
    bs = bodies(KEY.encode(), 12)
    try:
        with ServerProc(tmp_path / "srv", env) as srv, httpx.Client(base_url=srv.url, timeout=20) as c:
            assert c.post("/v1/pcs/submit", content=bs[0]).status_code == 200
            redis_proc.terminate()
            redis_proc.wait(10)
            # failures until the breaker opens
            for b in bs[1:3]:
                r = c.post("/v1/pcs/submit", content=b)
                assert r.status_code == 503 and r.json()["type"] == "urn:flk:problem:store-unavailable"
            # open: 503 without calling the store
            r = c.post("/v1/pcs/submit", content=bs[3])
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert "flk_store_breaker_rejected 0.0" not in c.get("/metrics").text
            ready = c.get("/ready")
            assert ready.status_code == 503 and ready.json()["type"] == "urn:flk:problem:not-ready"
            assert 'flk_store_breaker_state 2.0' in c.get("/metrics").text
            redis_proc = redis_up()
            time.sleep(1.1)  # past open_s: the next batch is the half-open probe
            deadline = time.monotonic() + 10
            while True:
                r = c.post("/v1/pcs/submit", content=bs[3])
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200
            assert c.get("/ready").json()["breaker"] == "closed"
            assert c.post("/v1/pcs/submit", content=bs[4]).status_code == 200
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
