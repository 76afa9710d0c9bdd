"""Bounded store latency and pools that recover, against a real
``flk serve`` and a private Redis or PostgreSQL process:

* frozen store (SIGSTOP): every submission is answered 503 + ``Retry-After`` within
  a bound derived from ``STORE_TIMEOUT_S`` (two calls at most: the batch in flight
  and the one queued behind it; then the breaker, which counted the timeouts, is
  open and answers at once); nothing hangs for the freeze;
* after SIGCONT, and after kill -9 and a restart of the store: the first 200 comes
  within a stated bound, and from then on no submission gets a 503 (stale pooled
  connections are validated or replaced, not used).

The measured figures are printed (``-s``): answer times under the freeze, time to
the first 200 after the store is back.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from flk.impl.testing.workload import bodies

from .privatestores import PrivatePostgres, PrivateRedis
from .proc import ServerProc

pytestmark = pytest.mark.server

KEY = "0123456789abcdef0123456789abcdef"
TIMEOUT_S = 1.0
BREAKER_OPEN_S = 1.0
ANSWER_BOUND_S = 2 * TIMEOUT_S + 1.5  # the batch in flight + the next one + scheduling slack
BACK_BOUND_S = BREAKER_OPEN_S + TIMEOUT_S + 3.0  # first 200 after the store is back


class Submitter:
    def __init__(self, srv: ServerProc) -> None:
        self.srv = srv
        self.pool = iter(bodies(KEY.encode(), 5000, seed=270))
        self.lock = threading.Lock()

    def one(self) -> tuple[int, float, httpx.Response]:
        with self.lock:
            body = next(self.pool)
        t0 = time.monotonic()
        resp = httpx.post(self.srv.url + "/v1/pcs/submit", content=body, timeout=60)
        return resp.status_code, time.monotonic() - t0, resp

    def many(self, threads: int, each: int) -> list[tuple[int, float, httpx.Response]]:
        out: list = []

        def run() -> None:
            for _ in range(each):
                out.append(self.one())

        ts = [threading.Thread(target=run) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        return out

    def until_ok(self, bound: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < bound + 30:
            status, _, _ = self.one()
            if status == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError("no 200 within 30 s after the bound")

    def steady(self, seconds: float) -> list[int]:
        end, statuses = time.monotonic() + seconds, []
        while time.monotonic() < end:
            statuses.append(self.one()[0])
        return statuses


def metric(srv: ServerProc, name: str) -> float:
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def breaker_state(srv: ServerProc) -> int:
    return int(metric(srv, "flk_store_breaker_state"))


def check_503(results, what: str) -> None:
    for status, _elapsed, resp in results:
        assert status == 503, (what, status, resp.text[:200])
        assert resp.headers["retry-after"].isdigit(), what
        assert json.loads(resp.content)["type"] in ("urn:flk:problem:store-unavailable",), resp.text[:200]
    worst = max(e for _, e, _ in results)
    print(f"\n{what}: {len(results)} answers 503, worst {worst:.3f} s, median "
          f"{sorted(e for _, e, _ in results)[len(results) // 2]:.3f} s (STORE_TIMEOUT_S={TIMEOUT_S:g})")
    assert worst <= ANSWER_BOUND_S, (what, worst)


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_frozen_and_killed_store_answers_within_the_timeout_and_recovers(tmp_path, backend) -> None:
    store = PrivateRedis(persistent=True) if backend == "redis" else PrivatePostgres()
    store.start()
    env = {"PCS_HMAC_KEY": KEY, "WAL_GROUP_DELAY_MS": "0", "DEDUP_BACKEND": backend,
           "STORE_TIMEOUT_S": str(TIMEOUT_S), "BREAKER_FAILURES": "3", "BREAKER_OPEN_S": str(BREAKER_OPEN_S)}
    env["REDIS_ADDR" if backend == "redis" else "POSTGRES_CONN"] = store.url if backend == "redis" else store.dsn
    srv = ServerProc(tmp_path, env)
    try:
        with srv:
            sub = Submitter(srv)
            assert all(s == 200 for s in sub.steady(1.0))
            assert metric(srv, "flk_store_failed_items_total") == 0 and metric(srv, "flk_store_batched_items") > 0
            # -- frozen: bounded 503s, the breaker counted them
            store.stop_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            results = sub.many(threads=4, each=3)
            check_503(results, f"{backend} SIGSTOP")
            assert breaker_state(srv) in (1, 2), "the breaker did not count the store timeouts"
            # every 503 failed its lookup: a timed-out call's item or one the open breaker refused
            assert metric(srv, "flk_store_failed_items_total") >= len(results)
            time.sleep(max(0.0, 4.0 - (time.monotonic() - frozen_at)))  # a freeze longer than any bound
            store.stop_signal(signal.SIGCONT)
            back = sub.until_ok(BACK_BOUND_S)
            print(f"{backend} SIGCONT: first 200 after {back:.3f} s")
            assert back <= BACK_BOUND_S, back
            statuses = sub.steady(3.0)
            assert statuses and set(statuses) == {200}, statuses
            # -- killed and restarted: fast 503s while down, then no 503 after the bound
            store.kill9()
            check_503(sub.many(threads=2, each=2), f"{backend} kill -9 (down)")
            store.start()
            back = sub.until_ok(BACK_BOUND_S)
            print(f"{backend} restarted: first 200 after {back:.3f} s")
            assert back <= BACK_BOUND_S, back
            statuses = sub.steady(3.0)
            assert statuses and set(statuses) == {200}, statuses
    finally:
        store.close()
    log = srv.log_text()
    assert "Traceback" not in log, log[-3000:]
    # the log is the server's JSON lines, every one: no driver's raw warnings, no plain notes
    events = [json.loads(line) for line in log.splitlines() if line.strip()]
    # each outage (the freeze, the kill) is one dedup_store_failing and one dedup_store_recovered
    # per worker that met it, in that order, with what it cost -- not one line per 503
    by_worker: dict = {}
    for e in events:
        if e["event"] in ("dedup_store_failing", "dedup_store_recovered"):
            by_worker.setdefault(e["worker"], []).append(e)
    pairs = [seq[i:i + 2] for seq in by_worker.values() for i in range(0, len(seq), 2)]
    assert len(pairs) >= 2, by_worker
    for failing, recovered in pairs:
        assert (failing["event"], recovered["event"]) == ("dedup_store_failing", "dedup_store_recovered"), pairs
        assert failing["reason"] and recovered["down_s"] > 0, pairs
        assert recovered["failed_requests"] + recovered["refused_requests"] >= 1, pairs
