"""The SQLite store as the workers of one server use it: several connections on one file.

Why: ``flk serve``'s workers share one dedup file; each writes its batches in its own
transactions while the file grows under the others. The store reads the file through
SQLite's page cache, not a memory map (``PRAGMA mmap_size = 0``: a growing file shared
by writers made every connection unmap, remap and fault it in again). What must hold
whatever the setting: a row written through one connection is seen by the other,
first-write-wins across them, and the file keeps growing correctly past the sizes a
map would have covered.
"""

from __future__ import annotations

import random
import sqlite3

from flk.impl.dedup import StoredOutcome
from flk.impl.dedup.sqlite import _SCHEMA, CACHE_KIB, NEW_FILE_PAGE_SIZE, SqliteStore

NOW = 1000.0


def _outcome(i: int, writer: int) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200, b'{"w":%d,"pad":"%s"}' % (writer, b"x" * 400), NOW + i, "r1", "v1")


def test_the_store_does_not_map_the_file(tmp_path):
    store = SqliteStore(str(tmp_path / "dedup.sqlite"), layout="keyed")
    try:
        assert store._conn().execute("PRAGMA mmap_size").fetchone()[0] == 0
    finally:
        store.close()


def test_both_connections_keep_a_page_cache_of_cache_kib(tmp_path):
    """The Python connection gets the bounded cache, and the compiled rows' connection is opened
    with the same pragmas (sqlite.py says why it is not larger: a commit can walk the cache's
    whole hash table)."""
    assert 1024 <= CACHE_KIB <= 16384
    store = SqliteStore(str(tmp_path / "dedup.sqlite"), layout="keyed")
    try:
        assert store._conn().execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        assert f"PRAGMA cache_size = -{CACHE_KIB}" in store._pragmas  # the compiled rows' too
    finally:
        store.close()


def test_a_new_file_gets_the_page_size_an_existing_one_keeps_its_own(tmp_path):
    """New dedup files are made with NEW_FILE_PAGE_SIZE (2048); a file made before (SQLite's
    4096) is used as it is, read and written through both row paths."""
    assert NEW_FILE_PAGE_SIZE == 2048
    new, old = str(tmp_path / "new.sqlite"), str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(_SCHEMA)
    conn.execute("INSERT INTO dedup VALUES ('t', 'before', 1e12, ?)", (_outcome(0, 0).to_bytes(),))
    conn.close()
    for path, size in ((new, NEW_FILE_PAGE_SIZE), (old, 4096)):
        store = SqliteStore(path, layout="keyed")
        try:
            assert store._conn().execute("PRAGMA page_size").fetchone()[0] == size
            items = [("t", f"k{i}", _outcome(i, 1)) for i in range(300)]
            assert all(won for won, _ in store.put_many_if_absent(items, NOW))
            got = store.get_many([("t", f"k{i}") for i in range(300)], NOW)
            assert [o.to_bytes() for o in got] == [o.to_bytes() for _, _, o in items]
        finally:
            store.close()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA page_size").fetchone()[0] == size
        conn.close()
    store = SqliteStore(old, layout="keyed")
    try:
        assert store.get_many([("t", "before")], NOW)[0].to_bytes() == _outcome(0, 0).to_bytes()
    finally:
        store.close()


def test_two_connections_share_one_growing_file(tmp_path):
    path = str(tmp_path / "dedup.sqlite")
    a, b = SqliteStore(path, layout="keyed"), SqliteStore(path, layout="keyed")  # two workers' stores: one file, own connections
    rng = random.Random(5)
    first: dict = {}  # key -> (writer, outcome) of its first write
    try:
        for step in range(120):  # batches of 13 alternating between the two, keys overlapping
            writer, store = (0, a) if step % 2 == 0 else (1, b)
            keys = [f"p{rng.randrange(900)}" for _ in range(13)]
            items = [("t", k, _outcome(int(k[1:]), writer)) for k in keys]
            answers = store.put_many_if_absent(items, NOW)
            for (_, key, outcome), (won, got) in zip(items, answers, strict=True):
                if key not in first:
                    assert won, key  # nobody wrote it before: this write wins
                    first[key] = outcome
                else:
                    assert not won and got == first[key], key  # the first write, by either writer
        assert len(first) > 500  # the file grew well past a few pages (~0.5 KiB per row)
        keys = [("t", k) for k in sorted(first)]
        expected = [first[k] for _, k in keys]
        assert a.get_many(keys, NOW) == expected  # each connection reads every row of the other
        assert b.get_many(keys, NOW) == expected
    finally:
        a.close()
        b.close()
