"""Backend-specific behaviour: outages fail closed, URLs, the stored-outcome encoding."""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, StoreUnavailable, open_store
from flk.impl.dedup.sqlite import SqliteStore


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


OUT = StoredOutcome("0" * 64, 200, b"{}", 1.0, "r", "1")


def test_sqlite_missing_directory_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable) as info:
        open_store(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    # says how a URL names a path (three slashes: relative, a common surprise), never the path (logs)
    assert "sqlite:///PATH is relative to the working folder, sqlite:////PATH absolute" in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_sqlite_locked_beyond_timeout_is_unavailable(tmp_path):
    path = str(tmp_path / "d.db")
    s = SqliteStore(path, busy_timeout_ms=100)
    hog = sqlite3.connect(path, isolation_level=None)
    hog.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            s.put_if_absent("t", "p", OUT, 10.0)
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    assert s.put_if_absent("t", "p", OUT, 10.0) == (True, OUT)  # recovers once the lock is gone
    s.close()


def test_sqlite_uses_wal_mode(tmp_path):
    s = open_store("sqlite", path=str(tmp_path / "w.db"))
    conn = sqlite3.connect(str(tmp_path / "w.db"))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    s.close()


def test_redis_unreachable_fails_closed():
    s = open_store(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.5)
    assert s.ping() is False
    with pytest.raises(StoreUnavailable):
        s.get("t", "p", 1.0)
    with pytest.raises(StoreUnavailable):
        s.put_if_absent("t", "p", OUT, 1.0)
    with pytest.raises(StoreUnavailable):
        s.count(1.0)


def test_postgres_unreachable_fails_closed():
    with pytest.raises(StoreUnavailable):
        open_store(f"postgresql://flk@127.0.0.1:{_closed_port()}/flk", timeout_s=1.0)


def test_postgres_rejects_unsafe_table_name(postgres_dsn):
    with pytest.raises(ValueError):
        open_store(postgres_dsn, table="x; DROP TABLE y")


def test_postgres_open_waits_for_a_peer_creating_its_table(postgres_dsn):
    """Servers started together open one new table at once, and CREATE TABLE IF NOT
    EXISTS races against itself on the catalog (in make test: one of four processes
    failed with DuplicateObject). A store's DDL runs under the advisory lock on its
    table's name: while a peer holds it, the open waits; once released, it opens."""
    import threading
    import uuid

    import psycopg

    table = f"flkddl_{uuid.uuid4().hex[:10]}"
    peer = psycopg.connect(postgres_dsn, autocommit=True)
    peer.execute("SELECT pg_advisory_lock(hashtext(%s))", (table,))
    opened: list = []
    t = threading.Thread(target=lambda: opened.append(open_store(postgres_dsn, table=table, max_size=1)))
    try:
        t.start()
        t.join(1.0)
        assert opened == [], "the open did not wait for the peer's DDL lock"
    finally:
        peer.execute("SELECT pg_advisory_unlock(hashtext(%s))", (table,))
        t.join(30)
    try:
        assert len(opened) == 1 and opened[0].ping() is True
    finally:
        for s in opened:
            s.drop_table()
            s.close()
        peer.close()


def test_postgres_open_past_its_deadline_fails_and_leaves_nothing_open(postgres_dsn):
    """An open whose CREATE TABLE misses the deadline (a peer holds the DDL lock) answers
    StoreUnavailable and closes what it opened: the pool's connections end and its call
    threads stop (a failed open used to keep both for the life of the process)."""
    import threading
    import uuid

    import psycopg

    table = f"flkddl_{uuid.uuid4().hex[:10]}"
    peer = psycopg.connect(postgres_dsn, autocommit=True)
    peer.execute("SELECT pg_advisory_lock(hashtext(%s))", (table,))
    before = {t.name for t in threading.enumerate()}
    try:
        with pytest.raises(StoreUnavailable, match="timed out"):
            open_store(f"{postgres_dsn}?application_name={table}", table=table, timeout_s=3.0,
                       min_size=2, max_size=2)
    finally:
        peer.execute("SELECT pg_advisory_unlock(hashtext(%s))", (table,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = peer.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = %s", (table,)).fetchone()[0]
        left = {t.name for t in threading.enumerate()} - before
        if mine == 0 and not any(n.startswith("postgres-call") for n in left):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"a failed open left {mine} connections and threads {sorted(left)}")
    peer.close()


def test_a_closed_store_answers_unavailable(postgres_dsn, redis_url, tmp_path):
    """A call on a closed networked store is StoreUnavailable (the pipeline's 503), not the
    thread pool's RuntimeError."""
    pg = open_store(postgres_dsn, table="flk_closed_probe")
    pg.drop_table()
    for s in (pg, open_store(redis_url)):
        s.close()
        with pytest.raises(StoreUnavailable, match="closed store"):
            s.get("t", "p", 1.0)


def test_a_call_deadline_whose_pool_stopped_without_close_does_not_say_closed():
    """The closed-store answer names the cause only when the store closed it; a pool stopped
    otherwise (broken, or the interpreter exiting) is StoreUnavailable naming the error."""
    from flk.impl.dedup.base import CallDeadline

    d = CallDeadline(1.0)
    d._pool.shutdown()
    with pytest.raises(StoreUnavailable, match=r"^store call could not start \(RuntimeError\)$"):
        d.call(lambda: 1)
    d.close()
    with pytest.raises(StoreUnavailable, match=r"^store call on a closed store$"):
        d.call(lambda: 1)


def test_postgres_ddl_racing_a_peer_without_the_lock_runs_again(postgres_dsn):
    """A peer that does not take the DDL lock creates the marker table at the same moment
    and writes its marker: the store's CREATE waits on the catalog and fails when the peer
    commits; the store's transaction runs again and reads the peer's marker (the old code
    answered None -- 'no marker' -- for a DDL call that lost such a race)."""
    import threading
    import uuid

    import psycopg

    table = f"flkddl_{uuid.uuid4().hex[:10]}"
    store = open_store(postgres_dsn, table=table, max_size=1)
    peer = psycopg.connect(postgres_dsn)
    try:
        peer.execute(f"CREATE TABLE {store.generation_table} (id INTEGER PRIMARY KEY, generation TEXT NOT NULL)")
        peer.execute(f"INSERT INTO {store.generation_table} (id, generation) VALUES (1, 'peer-marker')")
        read: list = []
        t = threading.Thread(target=lambda: read.append(store.read_generation()))
        t.start()
        t.join(1.0)
        assert read == [] and t.is_alive()  # waiting on the peer's uncommitted table
        peer.commit()
        t.join(30)
        assert read == ["peer-marker"]
    finally:
        peer.rollback()
        peer.execute(f"DROP TABLE IF EXISTS {store.generation_table}")
        peer.commit()
        peer.close()
        store.drop_table()
        store.close()


def test_open_store_urls(tmp_path):
    with pytest.raises(ValueError):
        open_store("mongodb://x")
    with pytest.raises(ValueError):
        open_store("sqlite")
    s = open_store(f"sqlite:///{tmp_path}/a.db")  # sqlite:////abs/path -> /abs/path
    assert s.path == f"{tmp_path}/a.db"
    s.close()
    assert open_store("memory").kind == "memory"


def test_bad_keys_are_refused():
    s = open_store("memory")
    for tenant, pid in [("", "p"), ("a|b", "p"), ("t", ""), ("t", "x" * 300)]:
        with pytest.raises(ValueError):
            s.put_if_absent(tenant, pid, OUT, 1.0)
    with pytest.raises(ValueError):
        s.put_if_absent("t", "p", OUT, 1.0, ttl_s=0)


@settings(max_examples=50, deadline=None)
@given(
    digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    status=st.sampled_from([200, 202]),
    body=st.binary(max_size=200),
    first_seen=st.floats(0, 4e9, allow_nan=False),
    region=st.text(max_size=20),
    pv=st.text(max_size=20),
)
def test_stored_outcome_round_trips(digest, status, body, first_seen, region, pv):
    o = StoredOutcome(digest, status, body, first_seen, region, pv)
    assert StoredOutcome.from_bytes(o.to_bytes()) == o
