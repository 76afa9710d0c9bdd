"""The SQLite store's log layout (``layout="log"``, ``SQLITE_LAYOUT=log``) answers what the keyed
layout answers.

A log file holds one row per key in an append-only table; every store object (every
``flk serve`` worker) finds rows through its own in-memory index, caught up from the table
inside each call's transaction. The differential below drives a keyed store (the pure
reference rows) and **two** log stores on one file -- two indexes, as two workers have --
with the same operations, the log side alternating between its two stores: puts with keys
repeated in a batch, rows expiring, writes that expire at once, fresh rows, lookups,
deletes of a copy (a migration's prune), counts. Every answer must be the same, and at the
end both files hold the same live entries.

The other tests pin what the differential cannot reach: a transaction that fails leaves
no index entry behind; a deleted last row's ``seq`` is never used again (another index
would skip the row written under it); a file keeps the layout it was made with; a store
opened later reads the index from the table; the tiered store's warm tier works on it.
The whole contract suite runs on the log layout too (``tests/dedup/test_contract.py``),
and so does the SIGKILL campaign on a real two-worker server
(``tests/server/test_crash_sigkill.py``).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dedup.test_sqlite_rows_differential import (
    COMPILED,
    KEYS,
    NOW_VALUES,
    NOWS,
    PLANTED,
    fresh_items,
    needs_compiled,
    outcomes,
)
from dedup.test_sqlite_walbuf import planted_build
from flk.impl.core import accel
from flk.impl.dedup import StoredOutcome, StoreUnavailable, iter_entries
from flk.impl.dedup.sqlite import SqliteStore

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STORE_TTLS = st.sampled_from([1.0, 2.5, 60.0, 1e-9])  # 1e-9: now + ttl == now, every write expires at once
O1 = StoredOutcome("ab" * 32, 200, b"{}", 1.0, "eu", "1")
O2 = StoredOutcome("cd" * 32, 409, b"{}", 2.0, "eu", "1")


@st.composite
def operations(draw):
    pool = draw(st.lists(KEYS, min_size=1, max_size=6, unique=True))
    key = st.sampled_from(pool)
    put = st.tuples(st.just("put"), st.lists(st.tuples(key, outcomes()), max_size=8), NOWS, STORE_TTLS)
    fresh = st.tuples(st.just("fresh"), fresh_items(key), NOWS, STORE_TTLS)
    get = st.tuples(st.just("get"), st.lists(key, max_size=8), NOWS, st.just(0.0))
    # a prune: each key's copy is the stored outcome (a hit) or another outcome (a miss)
    delete = st.tuples(st.just("delete"), st.lists(st.tuples(key, st.booleans()), max_size=4), NOWS, st.just(0.0))
    count = st.tuples(st.just("count"), st.just(None), NOWS, st.just(0.0))
    return pool, draw(st.lists(st.one_of(put, fresh, get, delete, count), min_size=1, max_size=10))


def _norm(answers):
    """put_many_if_absent's answers, comparable across stores (a NaN first_seen is not == itself)."""
    return [(won, o.to_bytes()) for won, o in answers]


def _b(outcome):
    return None if outcome is None else outcome.to_bytes()


def _run(store, op, batch, now, ttl):
    if op == "put":
        return _norm(store.put_many_if_absent([(t, p, o) for (t, p), o in batch], now, ttl))
    if op == "fresh":
        head, entries = batch
        items = [(t, p, *o) if type(o) is tuple else (t, p, o) for (t, p), o in entries]
        return [_b(o) for o in store.put_many_fresh_if_absent(items, head, now, ttl)]
    if op == "get":
        return [_b(o) for o in store.get_many(batch, now)]
    if op == "count":
        return store.count(now)
    held = store.get_many([k for k, _hit in batch], now)  # delete: the copy is the stored outcome, or not
    items = [(t, p, o if hit and o is not None else O2) for ((t, p), hit), o in zip(batch, held, strict=True)]
    return store.delete_copies(items, now)


def _entries(store, now):
    return sorted((t, p, o.to_bytes()) for t, p, o in iter_entries(store, now))


# one case for each planted C bug (test_planted_log_bugs_are_caught), the stores taking turns: a key
# written twice in one batch whose writes expire at once (bug 9); a key the other store wrote (bug 10)
CAUGHT_BY_EXAMPLE = ([("t", "p"), ("t", "q")], [
    ("put", [(("t", "p"), O1), (("t", "p"), O2)], NOW_VALUES[0], 1e-9),
    ("put", [(("t", "q"), O1)], NOW_VALUES[0], 60.0),
    ("put", [(("t", "q"), O2)], NOW_VALUES[0], 60.0),
])


def _log_store(path: str, module=None, pure: bool = False) -> SqliteStore:
    """A log store on ``path``: the compiled rows, the pure ones, or a (planted) build's ``module``."""
    if pure:
        with accel.pure():
            return SqliteStore(path, layout="log")
    store = SqliteStore(path, layout="log")
    if module is not None:
        store._open_log_rows, store._index = module.open_log_rows, module.LogIndex()
    return store


def log_property(module=None, pure: bool = False, planted: bool = False):
    """Two log stores on one file (``module``'s rows, or the pure ones) against a keyed store."""

    @(PLANTED if planted else SETTINGS)
    @given(drawn=operations())
    @example(drawn=CAUGHT_BY_EXAMPLE)
    def prop(drawn):
        pool, ops = drawn
        with tempfile.TemporaryDirectory(prefix="flk-log-") as d:
            with accel.pure():
                keyed = SqliteStore(os.path.join(d, "keyed.db"), layout="keyed")
            logs = [_log_store(os.path.join(d, "log.db"), module, pure) for _ in range(2)]
            try:
                assert (keyed.layout, logs[0].layout, logs[1].layout) == ("keyed", "log", "log")
                for i, (op, batch, now, ttl) in enumerate(ops):
                    assert _run(logs[i % 2], op, batch, now, ttl) == _run(keyed, op, batch, now, ttl), (i, op)
                every = pool + pool[::-1]
                for now in NOW_VALUES:
                    want = [_b(o) for o in keyed.get_many(every, now)]
                    for log in logs:
                        assert [_b(o) for o in log.get_many(every, now)] == want
                        assert log.count(now) == keyed.count(now)
                        assert _entries(log, now) == _entries(keyed, now)
                assert {log.rows_path for log in logs} == {"pure" if pure else "compiled"}
            finally:
                keyed.close()
                for log in logs:
                    log.close()

    return prop


@needs_compiled
@pytest.mark.differential("open_log_rows")
def test_compiled_log_rows_answer_as_the_reference():
    """The compiled log rows (two stores, two C indexes, one file) answer as the keyed store."""
    if COMPILED is None:
        pytest.fail("the compiled SQLite rows are not built (CI needs libsqlite3-dev: make setup)")
    log_property()()


def test_pure_log_rows_answer_as_the_keyed_store():
    """The pure reference (LogRows over PyLogIndex) answers as the keyed store."""
    log_property(pure=True)()


@needs_compiled
@pytest.mark.parametrize("bug", [9, 10])
def test_planted_log_bugs_are_caught(bug):
    """A key written twice in one batch (its write expiring at once) answered as a loser (bug
    9); the index never caught up with the other store's rows (bug 10): the property fails."""
    planted = planted_build(bug)
    # a wrong answer, or the rows' own check failing the call (the planted build's own Error class)
    with pytest.raises(Exception):  # noqa: B017, PT011
        log_property(planted, planted=True)()


def test_a_failed_transaction_leaves_no_index_entry(tmp_path):
    """A batch that SQLite refuses (here a trigger aborts its insert) is rolled back, and the
    index learns none of its keys: a lookup says absent, and another writer can take them."""
    path = str(tmp_path / "d.db")
    a, b = SqliteStore(path, layout="log"), SqliteStore(path, layout="log")
    try:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON dedup_log WHEN NEW.pcs_id = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        conn.commit()
        with pytest.raises(StoreUnavailable):
            a.put_many_if_absent([("t", "k1", O1), ("t", "boom", O1)], 10.0)
        assert a.get_many([("t", "k1")], 10.0) == [None]
        conn.execute("DROP TRIGGER boom")
        conn.commit()
        conn.close()
        assert b.put_if_absent("t", "k1", O2, 10.0) == (True, O2)
        assert a.put_if_absent("t", "k1", O1, 10.0) == (False, O2)
    finally:
        a.close()
        b.close()


def test_a_deleted_last_row_number_is_never_used_again(tmp_path):
    """Store ``b`` has read up to row 1; ``a`` deletes row 1 (the last one) and writes ``k2``.
    Were ``k2`` written under the freed number 1, ``b`` (which reads rows above 1) would never
    see it and would store ``k2`` a second time."""
    path = str(tmp_path / "d.db")
    a, b = SqliteStore(path, layout="log"), SqliteStore(path, layout="log")
    try:
        assert a.put_if_absent("t", "k1", O1, 10.0)[0]
        assert b.get_many([("t", "k1")], 10.0) == [O1]
        assert a.delete_copies([("t", "k1", O1)], 10.0) == 1
        assert a.put_if_absent("t", "k2", O1, 10.0)[0]
        assert b.put_if_absent("t", "k2", O2, 10.0) == (False, O1)
        assert b.get_many([("t", "k1")], 10.0) == [None]
        assert b.put_if_absent("t", "k1", O2, 10.0) == (True, O2)
        assert a.get_many([("t", "k1")], 10.0) == [O2]
        assert a.count(10.0) == b.count(10.0) == 2
    finally:
        a.close()
        b.close()


def test_a_file_keeps_its_layout_and_a_new_store_reads_its_index(tmp_path):
    keyed, log = str(tmp_path / "k.db"), str(tmp_path / "l.db")
    s = SqliteStore(keyed, layout="keyed")
    s.put_if_absent("t", "p", O1, 10.0)
    s.close()
    s = SqliteStore(log, layout="log")
    s.put_many_if_absent([("t", f"p{i}", O1) for i in range(500)], 10.0)
    s.close()
    s = SqliteStore(keyed, layout="log")
    try:
        assert s.layout == "keyed" and s.scans_in_order()
        assert s.put_if_absent("t", "p", O2, 10.0) == (False, O1)
    finally:
        s.close()
    s = SqliteStore(log, layout="keyed")  # the file's own layout wins
    try:
        assert s.layout == "log" and not s.scans_in_order()
        got = s.put_many_if_absent([("t", "p499", O2), ("t", "p500", O2)], 10.0)
        assert got == [(False, O1), (True, O2)]
        assert s.count(10.0) == 501
    finally:
        s.close()


def test_a_log_scan_pages_through_every_live_entry_once(tmp_path):
    s = SqliteStore(str(tmp_path / "l.db"), layout="log")
    try:
        s.put_many_if_absent([("t", f"p{i:03d}", O1) for i in range(250)], 10.0)
        s.put_many_if_absent([("t", f"q{i:03d}", O1) for i in range(10)], 10.0, ttl_s=1.0)  # expired at 20
        seen, cursor = [], None
        while True:
            page, cursor = s.scan(cursor, 40, 20.0)
            assert len(page) <= 40
            seen += [p for _t, p, _o in page]
            if cursor is None:
                break
        assert seen == [f"p{i:03d}" for i in range(250)]  # write order, each once, none expired
        # a scan ends at the rows there when it began: writes during it cannot keep it going
        page, cursor = s.scan(None, 100, 20.0)
        n = 0
        while cursor is not None:
            s.put_many_if_absent([("t", f"r{n}-{i}", O1) for i in range(200)], 20.0)
            page, cursor = s.scan(cursor, 100, 20.0)
            n += 1
        assert n == 2 and page[-1][1] == "p249"
        for bad in ("x", "[-1]", '["t","p"]', "[1.5]", "[]", "[3]", "[5,4]", "[-1,3]", "[1,2,3]"):
            with pytest.raises(ValueError, match="invalid scan cursor"):
                s.scan(bad, 10, 20.0)
    finally:
        s.close()


def test_an_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        SqliteStore(str(tmp_path / "x.db"), layout="btree")


@pytest.mark.parametrize("pure", [False, True])
def test_a_key_written_again_many_times_elsewhere_is_still_found(tmp_path, pure):
    """Store ``a`` deletes and writes one key again 40 times; store ``b`` files every one of those
    rows (its index keeps the stale ones until it looks the key up) and must still find the live
    row among them, however many there are."""
    if not pure and COMPILED is None:
        pytest.skip("compiled SQLite rows not active")
    path = str(tmp_path / "d.db")
    a, b = _log_store(path, pure=pure), _log_store(path, pure=pure)
    try:
        for i in range(40):
            o = StoredOutcome(f"{i:064x}", 200, b"{}", 1.0, "eu", "1")
            assert a.put_if_absent("t", "k", o, 10.0) == (True, o)
            assert b.get_many([("t", "other")], 10.0) == [None]  # b files the row, never looks "k" up
            if i < 39:
                assert a.delete_copies([("t", "k", o)], 10.0) == 1
        assert b.put_if_absent("t", "k", O1, 10.0) == (False, o)
        assert b.count(10.0) == 1
    finally:
        a.close()
        b.close()
