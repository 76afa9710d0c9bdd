"""The SQLite store's batch rows wait for another connection's write lock (the other workers of
one server write to the same file) and give up after the store's busy timeout
(``_fastsqlite.c``'s ``rows_busy``; the pure ``SqlRows`` through Python's ``sqlite3`` keep
SQLite's own handler): a short lock is waited out, a long one fails the call as
``StoreUnavailable``, and nothing hangs."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from flk.impl.dedup.base import StoredOutcome, StoreUnavailable
from flk.impl.dedup.sqlite import SqliteStore

KEY = ("t1", "a" * 64)
OUTCOME = StoredOutcome("b" * 64, 200, b'{"status":"accepted"}', 1000.0, "r1", "v1")


def _holder(path: str) -> sqlite3.Connection:
    """Another connection on the same file, holding its write lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _release_after(conn: sqlite3.Connection, seconds: float) -> tuple[threading.Timer, threading.Event]:
    released = threading.Event()

    def release() -> None:
        conn.execute("COMMIT")
        released.set()

    timer = threading.Timer(seconds, release)
    timer.start()
    return timer, released


def _store(tmp_path, busy_ms: int) -> SqliteStore:
    store = SqliteStore(str(tmp_path / "dedup.sqlite3"), busy_timeout_ms=busy_ms)
    assert store.get_many([KEY], 1000.0) == [None]  # the file, its schema and this thread's rows exist
    return store


def test_a_short_write_lock_is_waited_out_and_the_batch_written(tmp_path) -> None:
    store = _store(tmp_path, busy_ms=5000)
    holder = _holder(store.path)
    timer, released = _release_after(holder, 0.05)
    try:
        assert store.put_many_if_absent([(*KEY, OUTCOME)], 1000.0) == [(True, OUTCOME)]
        assert released.is_set()  # it was written only after the other connection let go
        assert store.get_many([KEY], 1000.0) == [OUTCOME]
    finally:
        timer.join()
        holder.close()
        store.close()


def test_a_lock_held_past_the_busy_timeout_fails_the_call_instead_of_hanging(tmp_path) -> None:
    store = _store(tmp_path, busy_ms=100)
    holder = _holder(store.path)
    timer, released = _release_after(holder, 20.0)  # long after the 100 ms: only a safety net
    try:
        with pytest.raises(StoreUnavailable):
            store.put_many_if_absent([(*KEY, OUTCOME)], 1000.0)
        assert not released.is_set()  # it gave up while the lock was still held
    finally:
        timer.cancel()
        if not released.is_set():
            holder.execute("ROLLBACK")
        holder.close()
    assert store.put_many_if_absent([(*KEY, OUTCOME)], 1000.0) == [(True, OUTCOME)]  # and works once it is free
    store.close()


def test_no_busy_timeout_means_no_wait(tmp_path) -> None:
    store = _store(tmp_path, busy_ms=0)
    holder = _holder(store.path)
    try:
        with pytest.raises(StoreUnavailable):
            store.put_many_if_absent([(*KEY, OUTCOME)], 1000.0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()
