"""A store call over a network costs the fewest round trips it can, whatever the batch,
measured through a forwarder that holds every byte the client sends 250 ms
(:mod:`flk.impl.lab.cluster.storeproxy`, the real-cluster ``store_latency``) against the suite's
real services:

* PostgreSQL: two -- the pool's check of the connection, then the whole transaction pipelined
  (BEGIN, the statements, COMMIT sent together); one statement at a time took 4-5 (BEGIN,
  statement, COMMIT, and the read of the losers' winners);
* Redis: one -- a pipeline of EVALSHA; redis-py's pipelined script call asked SCRIPT EXISTS
  first (two). A Redis that lost the script (SCRIPT FLUSH, a restart) still answers right.

The answers are the ones the store gives without the forwarder (first-write-wins, the losers'
winners)."""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

import pytest

from flk.impl.dedup.base import StoredOutcome
from flk.impl.dedup.postgres import PIPELINED, PostgresStore
from tests.cluster.test_storeproxy import Proxy

DELAY_MS = 250.0  # long: a busy machine's stalls (tens of ms) stay far inside one round trip's slack
SLACK_S = 0.8 * DELAY_MS / 1000  # the server's own time and the machine's; one more round trip would not fit
T0 = 1_795_000_000.0


def outcome(k: int) -> StoredOutcome:
    return StoredOutcome(f"{k:064x}", 200, b"{}", T0, "r1", "p1")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@pytest.mark.postgres
@pytest.mark.skipif(not PIPELINED, reason="libpq < 14: no pipeline mode (one round trip per statement)")
def test_a_postgres_store_call_is_two_round_trips(tmp_path, postgres_dsn):
    u = urlparse(postgres_dsn)
    proxy = Proxy(tmp_path, f"{u.hostname}:{u.port}")
    store = None
    try:
        store = PostgresStore(postgres_dsn.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}"),
                              table=f"rt_{os.getpid()}", timeout_s=10.0)
        held = [("t0", f"k{i}") for i in range(40)]
        assert store.put_many_if_absent([(t, p, outcome(1)) for t, p in held[:20]], T0, 3600) == \
            [(True, outcome(1))] * 20
        proxy.set_delay(DELAY_MS)
        budget = 2 * DELAY_MS / 1000 + SLACK_S  # two round trips; three would not fit
        got, took = _timed(lambda: store.get_many(held, T0 + 1))
        assert got == [outcome(1)] * 20 + [None] * 20 and took < budget, took
        # twenty losers (their winners read back), twenty winners and a repeat of a winner's key
        items = [(t, p, outcome(2)) for t, p in held] + [(*held[30], outcome(3))]
        got, took = _timed(lambda: store.put_many_if_absent(items, T0 + 1, 3600))
        assert got == [(False, outcome(1))] * 20 + [(True, outcome(2))] * 20 + [(False, outcome(2))], got
        assert took < budget, took
        assert took >= 2 * DELAY_MS / 1000  # held: the forwarder was in the path
        got, took = _timed(lambda: store.delete_copies([(*held[0], outcome(1)), (*held[1], outcome(9))], T0 + 1))
        assert got == 1 and took < budget, took
        proxy.set_delay(0.0)
        assert store.get_many(held[:2], T0 + 1) == [None, outcome(1)]
    finally:
        if store is not None:
            store.drop_table()
            store.close()
        proxy.stop()


@pytest.mark.postgres
def test_without_pipeline_mode_the_answers_are_the_same(postgres_dsn, monkeypatch):
    """A libpq older than 14 has no pipeline mode: each call is then a plain transaction, one
    round trip per statement, with the same answers (both paths over the same sequence)."""
    import flk.impl.dedup.postgres as pg

    def sequence(table: str) -> list:
        store = PostgresStore(postgres_dsn, table=table)
        try:
            keys = [("t0", f"k{i}") for i in range(6)]
            return [store.put_many_if_absent([(t, p, outcome(1)) for t, p in keys[:3]], T0, 3600),
                    store.get_many(keys, T0 + 1),
                    store.put_many_if_absent([(t, p, outcome(2)) for t, p in keys] + [(*keys[4], outcome(3))],
                                             T0 + 1, 3600),
                    store.delete_copies([(*keys[0], outcome(1)), (*keys[5], outcome(1))], T0 + 2),
                    store.get_many(keys, T0 + 2), store.count(T0 + 2)]
        finally:
            store.drop_table()
            store.close()

    piped = sequence(f"rt_a_{os.getpid()}")
    monkeypatch.setattr(pg, "PIPELINED", False)
    assert sequence(f"rt_b_{os.getpid()}") == piped
    assert piped[2] == [(False, outcome(1))] * 3 + [(True, outcome(2))] * 3 + [(False, outcome(2))]
    assert piped[3] == 1 and piped[5] == 5


@pytest.mark.redis
def test_a_redis_store_call_is_one_round_trip_and_survives_a_script_flush(tmp_path, redis_url):
    import redis

    from flk.impl.dedup.redis import RedisStore

    u = urlparse(redis_url)
    proxy = Proxy(tmp_path, f"{u.hostname}:{u.port}")
    prefix = f"flktest:rt{os.getpid()}:"
    store = RedisStore(redis_url.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}"), prefix=prefix)
    try:
        held = [("t0", f"k{i}") for i in range(40)]
        assert store.put_many_if_absent([(t, p, outcome(1)) for t, p in held[:20]], T0, 3600) == \
            [(True, outcome(1))] * 20
        assert store.get_many(held[:1], T0) == [outcome(1)]  # the connection is set up
        # and both scripts are in this Redis (a first call loads its script: NOSCRIPT, load, again)
        assert store.delete_copies([(*held[0], outcome(9))], T0) == 0
        proxy.set_delay(DELAY_MS)
        budget = DELAY_MS / 1000 + SLACK_S  # one round trip; two would not fit
        items = [(t, p, outcome(2)) for t, p in held] + [(*held[30], outcome(3))]
        got, took = _timed(lambda: store.put_many_if_absent(items, T0 + 1, 3600))
        assert got == [(False, outcome(1))] * 20 + [(True, outcome(2))] * 20 + [(False, outcome(2))], got
        assert DELAY_MS / 1000 <= took < budget, took
        got, took = _timed(lambda: store.get_many(held[18:22], T0 + 1))
        assert got == [outcome(1)] * 2 + [outcome(2)] * 2 and took < budget, took
        got, took = _timed(lambda: store.delete_copies([(*held[0], outcome(1)), (*held[25], outcome(9))], T0 + 1))
        assert got == 1 and took < budget, took
        proxy.set_delay(0.0)
        redis.Redis.from_url(redis_url).script_flush()  # the Redis lost its scripts: loaded again, same answers
        more = [("t1", f"k{i}") for i in range(3)]
        assert store.put_many_if_absent([(t, p, outcome(4)) for t, p in more] + [(*held[1], outcome(4))],
                                        T0 + 2, 3600) == [(True, outcome(4))] * 3 + [(False, outcome(1))]
        redis.Redis.from_url(redis_url).script_flush()
        assert store.delete_copies([(*more[0], outcome(4))], T0 + 2) == 1
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=prefix + "*"):
            client.delete(k)
        store.close()
        proxy.stop()
