"""A store call over a network costs the fewest round trips it can, whatever the batch,
counted at a forwarder between the client and the suite's real services that holds every byte
the client sends 250 ms (as the real-cluster ``store_latency`` forwarder,
:mod:`flk.impl.lab.cluster.storeproxy`, does). A round trip is a turn: a flight of client bytes
sent after the store had answered. The hold keeps a pipelined flight whole (the store cannot
answer its first part before the client has sent the rest) and shows the forwarder was in the
path (a call of ``n`` turns takes at least ``n`` holds); the count, not the time, is asserted,
so a busy disk that slows the store's commit cannot fail it:

* PostgreSQL: two -- the pool's check of the connection, then the whole transaction pipelined
  (BEGIN, the statements, COMMIT sent together); one statement at a time took 4-5 (BEGIN,
  statement, COMMIT, and the read of the losers' winners);
* Redis: one -- a pipeline of EVALSHA; redis-py's pipelined script call asked SCRIPT EXISTS
  first (two). A Redis that lost the script (SCRIPT FLUSH, a restart) still answers right.

The answers are the ones the store gives without the forwarder (first-write-wins, the losers'
winners)."""

from __future__ import annotations

import collections
import os
import queue
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from flk.impl.dedup.base import StoredOutcome
from flk.impl.dedup.postgres import PIPELINED, PostgresStore

DELAY_S = 0.25  # long: a busy machine's stalls (tens of ms) cannot split a pipelined flight
T0 = 1_795_000_000.0


def outcome(k: int) -> StoredOutcome:
    return StoredOutcome(f"{k:064x}", 200, b"{}", T0, "r1", "p1")


class TurnCounter:
    """A TCP forwarder to ``upstream`` that holds the client's bytes ``delay_s`` (in order) and
    counts each connection's turns: a turn starts when client bytes come after the store's."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.delay_s = upstream, 0.0
        self.turns: collections.Counter[int] = collections.Counter()  # connection number -> turns
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            store = socket.create_connection(self.upstream)
            with self._lock:
                n = len(self._socks)
                self._socks += [client, store]
            answered = [True]  # the store spoke last (a connection starts with the client's turn)
            held: queue.Queue = queue.Queue()
            for target, args in ((self._hold, (client, held, n, answered)), (self._release, (held, store)),
                                 (self._answer, (store, client, answered))):
                threading.Thread(target=target, args=args, daemon=True).start()

    def _hold(self, client: socket.socket, held: queue.Queue, n: int, answered: list[bool]) -> None:
        while data := _recv(client):
            with self._lock:
                if answered[0]:
                    self.turns[n] += 1
                    answered[0] = False
            held.put((time.monotonic() + self.delay_s, data))
        held.put((0.0, b""))

    @staticmethod
    def _release(held: queue.Queue, store: socket.socket) -> None:
        while True:
            due, data = held.get()
            if not data:
                return _close(store)
            time.sleep(max(0.0, due - time.monotonic()))
            if not _send(store, data):
                return None

    def _answer(self, store: socket.socket, client: socket.socket, answered: list[bool]) -> None:
        while data := _recv(store):
            with self._lock:
                answered[0] = True
            if not _send(client, data):
                break
        _close(client)

    def counted(self, fn):
        """``fn()``'s result, the turns it took on each connection it used, and its time."""
        with self._lock:
            before = collections.Counter(self.turns)
        t0 = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t0
        with self._lock:
            return out, sorted((self.turns - before).values()), took

    def close(self) -> None:
        _close(self._listener)
        with self._lock:
            for s in self._socks:
                _close(s)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    """False: the other side (or the test's close) ended the connection."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def test_the_counter_counts_turns_not_writes(tmp_path):
    """Four writes in one flight are one turn; a reply and then more bytes are a second; each
    held ``delay_s``; answers pass at once. Fails if the counter counted writes or no turns."""
    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = echo.accept()
        while data := _recv(conn):
            if b"!" in data:
                conn.sendall(b"ok")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    fwd = TurnCounter(echo.getsockname())
    fwd.delay_s = 0.1
    try:
        c = socket.create_connection(("127.0.0.1", fwd.port))

        def flight(parts: list[bytes]) -> bytes:
            for part in parts:
                c.sendall(part)
            return c.recv(2)

        assert fwd.counted(lambda: flight([b"a", b"b", b"c", b"!"]))[:2] == (b"ok", [1])
        got, turns, took = fwd.counted(lambda: (flight([b"!"]), flight([b"x", b"!"])))
        assert got == (b"ok", b"ok") and turns == [2] and took >= 2 * fwd.delay_s
        c.close()
    finally:
        fwd.close()
        echo.close()


@pytest.mark.postgres
@pytest.mark.skipif(not PIPELINED, reason="libpq < 14: no pipeline mode (one round trip per statement)")
def test_a_postgres_store_call_is_two_round_trips(tmp_path, postgres_dsn):
    u = urlparse(postgres_dsn)
    fwd = TurnCounter((u.hostname, u.port))
    store = None
    try:
        store = PostgresStore(postgres_dsn.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{fwd.port}"),
                              table=f"rt_{os.getpid()}", timeout_s=10.0)
        held = [("t0", f"k{i}") for i in range(40)]
        assert store.put_many_if_absent([(t, p, outcome(1)) for t, p in held[:20]], T0, 3600) == \
            [(True, outcome(1))] * 20
        fwd.delay_s = DELAY_S
        got, turns, took = fwd.counted(lambda: store.get_many(held, T0 + 1))
        assert got == [outcome(1)] * 20 + [None] * 20 and turns == [2], turns
        # twenty losers (their winners read back), twenty winners and a repeat of a winner's key
        items = [(t, p, outcome(2)) for t, p in held] + [(*held[30], outcome(3))]
        got, turns, took = fwd.counted(lambda: store.put_many_if_absent(items, T0 + 1, 3600))
        assert got == [(False, outcome(1))] * 20 + [(True, outcome(2))] * 20 + [(False, outcome(2))], got
        assert turns == [2] and took >= 2 * DELAY_S, (turns, took)  # held: the forwarder was in the path
        got, turns, _ = fwd.counted(lambda: store.delete_copies([(*held[0], outcome(1)), (*held[1], outcome(9))],
                                                                T0 + 1))
        assert got == 1 and turns == [2], turns
        fwd.delay_s = 0.0
        assert store.get_many(held[:2], T0 + 1) == [None, outcome(1)]
    finally:
        if store is not None:
            store.drop_table()
            store.close()
        fwd.close()


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
    fwd = TurnCounter((u.hostname, u.port))
    prefix = f"flktest:rt{os.getpid()}:"
    store = RedisStore(redis_url.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{fwd.port}"), prefix=prefix)
    try:
        held = [("t0", f"k{i}") for i in range(40)]
        assert store.put_many_if_absent([(t, p, outcome(1)) for t, p in held[:20]], T0, 3600) == \
            [(True, outcome(1))] * 20
        assert store.get_many(held[:1], T0) == [outcome(1)]  # the connection is set up
        # and both scripts are in this Redis (a first call loads its script: NOSCRIPT, load, again)
        assert store.delete_copies([(*held[0], outcome(9))], T0) == 0
        fwd.delay_s = DELAY_S
        items = [(t, p, outcome(2)) for t, p in held] + [(*held[30], outcome(3))]
        got, turns, took = fwd.counted(lambda: store.put_many_if_absent(items, T0 + 1, 3600))
        assert got == [(False, outcome(1))] * 20 + [(True, outcome(2))] * 20 + [(False, outcome(2))], got
        assert turns == [1] and took >= DELAY_S, (turns, took)  # held: the forwarder was in the path
        got, turns, _ = fwd.counted(lambda: store.get_many(held[18:22], T0 + 1))
        assert got == [outcome(1)] * 2 + [outcome(2)] * 2 and turns == [1], turns
        got, turns, _ = fwd.counted(lambda: store.delete_copies([(*held[0], outcome(1)), (*held[25], outcome(9))],
                                                                T0 + 1))
        assert got == 1 and turns == [1], turns
        fwd.delay_s = 0.0
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
        fwd.close()
