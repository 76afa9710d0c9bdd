"""Who folds the SQLite store's WAL into its file (``SqliteStore(checkpoint=..., layout="keyed")``).

Why: with SQLite's automatic checkpoint, the commit that crosses the threshold copies the
WAL's pages into the file and fsyncs both on the thread that committed -- in ``flk serve``
the batch thread, so the batches behind it wait. ``checkpoint="background"`` (what the
server uses) moves that work to a thread of the store; the serving connections keep the
automatic checkpoint only as a far backstop. What must hold: the file does get the rows
(by the store's thread, not the writer's), a log that passive checkpoints cannot finish is
restarted, the thread stops with the store, and what was written is read back either way.
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from flk.impl.dedup import StoredOutcome
from flk.impl.dedup.sqlite import (
    BACKSTOP_AUTOCHECKPOINT,
    DEFAULT_CHECKPOINT_ROWS,
    INLINE_AUTOCHECKPOINT,
    RESTART_WAIT_MS,
    SqliteStore,
    _Checkpointer,
)
from flk.impl.server.config import ConfigError, load_config

NOW = 1000.0


def _items(start: int, n: int) -> list:
    return [("t", f"p{i:06d}", StoredOutcome(f"{i:064x}", 200, b'{"pad":"%s"}' % (b"x" * 300), NOW, "r1", "v1"))
            for i in range(start, start + n)]


def _write(store: SqliteStore, rows: int, batch: int = 30, first: int = 0) -> None:
    for start in range(first, first + rows, batch):
        assert all(won for won, _ in store.put_many_if_absent(_items(start, batch), NOW))


def _file_pages(path: str) -> int:
    return os.path.getsize(path) // 4096


def _wait_for(cond, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.mark.parametrize("checkpoint", ["inline", "background"])
def test_the_writing_connections_checkpoint_only_inline(tmp_path, checkpoint):
    store = SqliteStore(str(tmp_path / "d.sqlite"), checkpoint=checkpoint, layout="keyed")
    try:
        auto = store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert auto == (INLINE_AUTOCHECKPOINT if checkpoint == "inline" else BACKSTOP_AUTOCHECKPOINT)
        assert (store._checkpointer is None) == (checkpoint == "inline")
        assert (store.checkpoint_stats() is None) == (checkpoint == "inline")
    finally:
        store.close()


def test_background_checkpoint_folds_the_wal_into_the_file_after_the_rows(tmp_path):
    path = str(tmp_path / "d.sqlite")
    store = SqliteStore(path, checkpoint="background", checkpoint_rows=100, layout="keyed")
    try:
        before = _file_pages(path)
        _write(store, 600)  # some 150 WAL pages: far below either automatic threshold
        # the file grows while the thread's PRAGMA runs; its counter moves after the PRAGMA returns
        assert _wait_for(lambda: _file_pages(path) > before + 20 and store.checkpoint_stats()["done"] >= 1), \
            "the store's thread never checkpointed"
        assert store.checkpoint_stats()["failed"] == 0
        got = store.get_many([("t", f"p{i:06d}") for i in range(600)], NOW)
        assert got == [item[2] for item in _items(0, 600)]
    finally:
        store.close()


def test_inline_store_leaves_a_short_log_in_the_wal(tmp_path):
    """The counterpart: without the store's thread the same writes stay in the WAL (the
    background test above cannot pass by SQLite's own checkpoint)."""
    path = str(tmp_path / "d.sqlite")
    store = SqliteStore(path, layout="keyed")
    try:
        before = _file_pages(path)
        _write(store, 600)
        time.sleep(0.3)
        assert _file_pages(path) <= before + 1
    finally:
        store.close()


def test_a_quiet_store_is_folded_after_the_wait_without_reaching_the_rows(tmp_path):
    path = str(tmp_path / "d.sqlite")
    store = SqliteStore(path, checkpoint="background", checkpoint_rows=10**9, layout="keyed")
    store._checkpointer.max_wait_s = 0.05
    try:
        before = _file_pages(path)
        _write(store, 300)
        assert _wait_for(lambda: _file_pages(path) > before + 10)
    finally:
        store.close()


def test_a_log_passive_checkpoints_leave_long_is_restarted(tmp_path):
    path = str(tmp_path / "d.sqlite")
    writer = SqliteStore(path, checkpoint="background", checkpoint_rows=10**9, layout="keyed")  # its thread never wakes
    writer._checkpointer.max_wait_s = 3600.0
    ck = _Checkpointer(path, 10_000, rows=10**9, max_wait_s=3600.0, restart_pages=200)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _write(writer, 120)
        assert ck.fold(conn) == "passive"  # a short log: folded, left as it is
        _write(writer, 2400, batch=60, first=1000)  # some 600 WAL pages
        assert ck.fold(conn) == "restart" and ck.restarts == 1
        _write(writer, 30, first=5000)  # the next writer starts the log from its beginning
        busy, log, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and log < 100
        assert writer.get_many([("t", "p000000"), ("t", "p003399")], NOW) == [_items(0, 1)[0][2], _items(3399, 1)[0][2]]
    finally:
        conn.close()
        ck.close()
        writer.close()


def test_a_failed_checkpoint_is_counted_and_answered(tmp_path):
    ck = _Checkpointer(str(tmp_path / "d.sqlite"), 10_000, rows=1, max_wait_s=3600.0)
    conn = sqlite3.connect(str(tmp_path / "d.sqlite"))
    conn.close()
    try:
        assert ck.fold(conn) == "failed" and ck.failures == 1  # a closed connection
    finally:
        ck.close()


def test_closing_the_store_stops_its_checkpoint_thread(tmp_path):
    store = SqliteStore(str(tmp_path / "d.sqlite"), checkpoint="background", layout="keyed")
    thread = store._checkpointer._thread
    assert thread.is_alive()
    store.close()
    assert not thread.is_alive()


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError):
        SqliteStore(str(tmp_path / "d.sqlite"), checkpoint="sometimes", layout="keyed")
    with pytest.raises(ValueError):
        SqliteStore(str(tmp_path / "e.sqlite"), checkpoint="background", checkpoint_rows=0, layout="keyed")


def test_flk_serve_opens_its_sqlite_store_with_the_background_checkpoint(tmp_path):
    cfg = load_config({"DATA_DIR": str(tmp_path / "d")})
    assert cfg.dedup_backend == "sqlite" and cfg.store_options()["checkpoint"] == "background"
    store = cfg.open_store(NOW)
    try:
        assert store._checkpointer is not None
        assert store._checkpointer.rows == DEFAULT_CHECKPOINT_ROWS == 200  # SQLITE_CHECKPOINT_ROWS' default
    finally:
        store.close()


@pytest.mark.parametrize("rows", [1, 60, 5000])
def test_sqlite_checkpoint_rows_is_the_rows_after_which_flk_serves_store_folds(tmp_path, rows):
    """SQLITE_CHECKPOINT_ROWS reaches the store's thread (what the trigger does with it:
    test_background_checkpoint_folds_the_wal_into_the_file_after_the_rows)."""
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "SQLITE_CHECKPOINT_ROWS": str(rows)})
    store = cfg.open_store(NOW)
    try:
        assert store._checkpointer.rows == rows
    finally:
        store.close()


@pytest.mark.parametrize("value", ["0", "-5", "12.5", "many"])
def test_sqlite_checkpoint_rows_must_be_a_positive_count(tmp_path, value):
    with pytest.raises(ConfigError, match="SQLITE_CHECKPOINT_ROWS"):
        load_config({"DATA_DIR": str(tmp_path / "d"), "SQLITE_CHECKPOINT_ROWS": value})


def test_a_restart_held_up_by_a_reader_gives_up_and_writers_go_on(tmp_path):
    """A restart waits for readers of the old log and holds new writers back meanwhile: the
    store's thread waits at most RESTART_WAIT_MS, then the writers go on."""
    path = str(tmp_path / "d.sqlite")
    writer = SqliteStore(path, checkpoint="background", checkpoint_rows=10**9, layout="keyed")
    writer._checkpointer.max_wait_s = 3600.0
    ck = _Checkpointer(path, 10_000, rows=10**9, max_wait_s=3600.0, restart_pages=200)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=RESTART_WAIT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        _write(writer, 2400, batch=60)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM dedup").fetchone()[0] == 2400  # a snapshot held
        _write(writer, 600, batch=60, first=5000)  # frames the reader's snapshot does not include
        t0 = time.monotonic()
        assert ck.fold(conn) == "busy" and ck.restarts == 0
        assert time.monotonic() - t0 < 5.0
        _write(writer, 30, first=9000)  # writers are not held back after it gave up
        reader.execute("COMMIT")
        assert ck.fold(conn) == "restart"
    finally:
        reader.close()
        conn.close()
        ck.close()
        writer.close()


def test_a_restart_syncs_the_file_first_while_the_writers_go_on(tmp_path):
    """Before a restart the store's thread fdatasyncs the file holding no SQLite lock (a
    writer commits meanwhile), so the restart, which holds the writers back, has only the
    pages copied since to sync; a fold that does not restart does not sync."""
    path = str(tmp_path / "d.sqlite")
    writer = SqliteStore(path, checkpoint="background", checkpoint_rows=10**9, layout="keyed")
    writer._checkpointer.max_wait_s = 3600.0
    ck = _Checkpointer(path, 10_000, rows=10**9, max_wait_s=3600.0, restart_pages=200)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    synced: list[int] = []
    real_flush = ck.flush

    def flush() -> None:
        _write(writer, 30, first=8000 + 30 * len(synced))  # commits: no lock is held here
        real_flush()
        synced.append(ck.restarts)

    ck.flush = flush
    try:
        _write(writer, 120)
        assert ck.fold(conn) == "passive" and synced == []
        _write(writer, 2400, batch=60, first=1000)
        assert ck.fold(conn) == "restart" and synced == [0]  # synced before the restart
        assert writer.get_many([("t", "p008000")], NOW) == [_items(8000, 1)[0][2]]
    finally:
        conn.close()
        ck.close()
        writer.close()
    held = [os.path.realpath(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")]
    assert os.path.realpath(path) not in held  # the sync keeps no descriptor of the file open


def test_a_file_the_restart_cannot_sync_is_a_counted_failure(tmp_path):
    path = str(tmp_path / "d.sqlite")
    writer = SqliteStore(path, checkpoint="background", checkpoint_rows=10**9, layout="keyed")
    writer._checkpointer.max_wait_s = 3600.0
    ck = _Checkpointer(path, 10_000, rows=10**9, max_wait_s=3600.0, restart_pages=200)

    def failing_flush() -> None:
        raise OSError(5, "Input/output error")  # as fdatasync answers a failing disk

    ck.flush = failing_flush
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _write(writer, 2400, batch=60)
        assert ck.fold(conn) == "failed" and ck.failures == 1 and ck.restarts == 0  # no restart after it
        _write(writer, 30, first=9000)  # the writers go on
    finally:
        conn.close()
        ck.close()
        writer.close()
