"""A dedup store that lost its data is detected.

A real ``flk serve`` on a private, NON-persistent Redis (as ``scripts/services.sh``
ran it before): under load, Redis is killed with SIGKILL and restarted empty.
The generation marker the server wrote on the store's first use is checked on
every new connection and every ping, so the empty store is noticed before any
command uses it: no acknowledged PCS is answered as a fresh write afterwards
(they are refused 503), ``/ready`` is 503 naming the lost store and the recovery,
the log says ``dedup_store_lost``. The documented recovery -- restart with
``DEDUP_REBUILD=1`` -- rebuilds the store from the inbox WAL: every acknowledged
PCS is then answered as the replay of its first outcome.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest

from flk.impl.testing.workload import bodies

from .privatestores import PrivateRedis
from .proc import ServerProc

pytestmark = pytest.mark.server

KEY = "0123456789abcdef0123456789abcdef"


def test_redis_killed_under_load_and_back_empty_answers_no_acknowledged_pcs_as_fresh(tmp_path) -> None:
    redis = PrivateRedis(persistent=False).start()
    env = {"PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "1", "DEDUP_BACKEND": "redis", "REDIS_ADDR": redis.url,
           "STORE_TIMEOUT_S": "1", "BREAKER_OPEN_S": "0.5"}
    srv = ServerProc(tmp_path, env)
    acked: dict[bytes, dict] = {}  # body -> the first answer's JSON
    answers: list[int] = []
    stop = threading.Event()
    pool = iter(bodies(KEY.encode(), 20000, seed=2704))
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                with lock:
                    body = next(pool)
                resp = client.post(srv.url + "/v1/pcs/submit", content=body)
                answers.append(resp.status_code)
                if resp.status_code == 200 and resp.headers.get("idempotent-replayed") != "true":
                    acked[body] = resp.json()

    try:
        srv.start()
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        before = len(acked)
        redis.kill9()
        redis.start()  # the same port, empty: no persistence
        time.sleep(2.5)
        stop.set()
        for t in threads:
            t.join(60)
        assert before >= 20, f"the load acknowledged only {before} PCS before the kill"
        fresh = []
        with httpx.Client(timeout=30) as client:
            for body in acked:
                resp = client.post(srv.url + "/v1/pcs/submit", content=body)
                if resp.status_code == 200 and resp.headers.get("idempotent-replayed") != "true":
                    fresh.append(body)
                else:
                    assert resp.status_code == 503, resp.text[:200]
                    assert json.loads(resp.content)["type"] == "urn:flk:problem:store-unavailable"
        print(f"\n{len(acked)} acknowledged ({before} before the kill), {len(answers)} answers; "
              f"{len(fresh)} answered as fresh after the empty restart")
        assert fresh == []
        ready = httpx.get(srv.url + "/ready", timeout=10)
        assert ready.status_code == 503, ready.text
        lost = ready.json()["store_generation"]
        assert "lost its data" in lost["lost"] and "DEDUP_REBUILD=1" in lost["recovery"]
        # a new PCS is refused too: nothing is written into the empty store meanwhile
        new = httpx.post(srv.url + "/v1/pcs/submit", content=next(pool), timeout=30)
        assert new.status_code == 503
        srv.stop()
        log = srv.log_text()
        assert '"event":"dedup_store_lost"' in log and "Traceback" not in log
        # the documented recovery: rebuild from the inbox WAL
        srv.env["DEDUP_REBUILD"] = "1"
        srv.start()
        with httpx.Client(timeout=30) as client:
            for body, first in acked.items():
                resp = client.post(srv.url + "/v1/pcs/submit", content=body)
                assert resp.status_code == 200 and resp.headers.get("idempotent-replayed") == "true", resp.text
                assert resp.json() == first  # the first outcome, byte for byte (first_seen included)
        assert '"event":"dedup_store_rebuild"' in srv.log_text()
    finally:
        srv.stop()
        srv.kill()
        redis.close()


def test_a_plain_restart_against_the_emptied_store_still_refuses_writes(tmp_path) -> None:
    redis = PrivateRedis(persistent=False).start()
    env = {"PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0", "DEDUP_BACKEND": "redis", "REDIS_ADDR": redis.url,
           "STORE_TIMEOUT_S": "1"}
    srv = ServerProc(tmp_path, env)
    try:
        srv.start()
        body = bodies(KEY.encode(), 1, seed=uuid.uuid4().int % 1000)[0]
        assert httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=30).status_code == 200
        srv.stop()
        redis.kill9()
        redis.start()
        # the worker starts (it answers /ready), but is not ready and refuses writes
        try:
            srv.start(timeout=15)
            raise AssertionError("a worker against an emptied store became ready")
        except TimeoutError:
            pass
        resp = httpx.post(srv.url + "/v1/pcs/submit", content=body, timeout=30)
        assert resp.status_code == 503
        ready = httpx.get(srv.url + "/ready", timeout=10)
        assert ready.status_code == 503 and "store_generation" in ready.json()
        assert '"event":"wal_replay_skipped"' in srv.log_text()
    finally:
        srv.stop()
        srv.kill()
        redis.close()
