"""The SQLite store's compiled batch rows answer exactly what the pure reference answers.

``flk.impl.dedup._fastsqlite.Rows`` (C: its own connection, prepared statements, the
outcome bytes written in C) and :class:`flk.impl.dedup.sqlite.SqlRows` (Python's
``sqlite3``, the reference) are driven with the same operations on two real SQLite
files: batches of puts with keys repeated inside a batch, keys already stored, rows
expired at the batch's ``now`` (and writes that expire at once), odd tenant ids,
``pcs_id`` s with NUL, non-ASCII and astral characters, outcomes of every form (digests
that are not hex, non-ASCII or quoting regions, NaN/-0.0/huge ``first_seen``, bool and
huge statuses, a subclass), and *fresh* rows (``(tenant, pcs_id, digest, body)`` with the
batch's shared middle bytes: the verifier's common outcome, none built); then lookups. After every call the answers must be the
same (a written item's own outcome object, a loser's stored bytes), and at the end
both files hold the same rows byte for byte. Files written by one path are read by
the other (:class:`flk.impl.dedup.sqlite.SqliteStore` on each path).

``test_planted_c_bugs_are_caught`` builds ``_fastsqlite.c`` with a planted bug (every
row counted as written; a quote in a region left unescaped; a lookup miss after a hit
answered with the hit; a fresh row's digest one digit short) and checks that the property fails on it and passes on the
real build.
"""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from dedup.test_sqlite_walbuf import planted_build
from flk.impl.core import accel
from flk.impl.dedup import StoredOutcome, StoreUnavailable
from flk.impl.dedup import sqlite as sq
from flk.impl.dedup.sqlite import SqliteStore, SqlRows

COMPILED = accel.entry("open_rows").compiled
# skipped on the pure path (FLK_PURE=1) and, off CI, when the extension was not built; in CI
# an unbuilt extension fails (libsqlite3-dev missing would silently test nothing)
needs_compiled = pytest.mark.skipif(COMPILED is None and (accel.PURE_REQUESTED or os.environ.get("CI") != "true"),
                                    reason="compiled SQLite rows not active (FLK_PURE=1 or not built)")
ROWS = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# a planted build: the first failure is enough (no shrinking over real files); the explicit examples
# first, so that each planted bug is caught by a case written for it, not by a lucky draw
PLANTED = settings(ROWS, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)


class OddOutcome(StoredOutcome):
    """Not the exact type: the compiled rows ask its ``to_bytes()``."""


TENANTS = ["t", "bench", "a.b_c:d-e", "T" * 128, "0"]
PCS_IDS = st.one_of(
    st.sampled_from(["p", "q", "x" * 256, "a\x00b", "é", "\U0001f600", "p:q", "'; DROP TABLE dedup; --"]),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), min_size=1, max_size=12),
)
TEXTS = st.one_of(st.sampled_from(["eu", "bench", "1.0.0", 'eu"west', '"', "a\\b", "tab\there", "\x7f", "é", ""]),
                  st.text(max_size=6))
FIRST_SEEN = st.one_of(st.sampled_from([1_700_000_000.0, 0.0, -0.0, 1e300, 5e-324, math.nan, math.inf]),
                       st.floats(allow_nan=False), st.integers(-5, 5))


@st.composite
def outcomes(draw):
    """Half of the common form (what the verifier stores; the compiled rows write its bytes
    themselves), half anything a StoredOutcome can hold (they ask ``to_bytes()``)."""
    region, version = draw(TEXTS), draw(TEXTS)
    if draw(st.booleans()):
        digest = draw(st.sampled_from(["ab" * 32, "0", "AZaz09"]))
        first_seen = draw(st.sampled_from([1_700_000_000.0, 0.0, -0.0, 1e300, 5e-324, 0.1]))
        return StoredOutcome(digest, draw(st.sampled_from([200, 202])), draw(st.binary(max_size=40)), first_seen,
                             region, version)
    cls = draw(st.sampled_from([StoredOutcome, StoredOutcome, StoredOutcome, OddOutcome]))
    digest = draw(st.one_of(st.sampled_from(["ab" * 32, "0", "", "a b", "é1", "AZaz09"]), st.text(max_size=4)))
    status = draw(st.one_of(st.sampled_from([200, 202, True, 2**70, -1]), st.integers()))
    body = draw(st.one_of(st.sampled_from([b"{}", b"", b"a\nb\x00"]), st.binary(max_size=40)))
    return cls(digest, status, body, draw(FIRST_SEEN), region, version)


KEYS = st.tuples(st.sampled_from(TENANTS), PCS_IDS)
NOW_VALUES = [1_000_000_000.0, 1_000_000_000.5, 1_000_000_003.0, 1_000_000_100.0]
NOWS = st.sampled_from(NOW_VALUES)
TTLS = st.sampled_from([1.0, 2.5, 60.0, 1e-9])  # 1e-9: now + ttl == now, every write expires at once


FRESH_DIGESTS = st.one_of(st.sampled_from(["ab" * 32, "ab" * 32, "0", "AZaz09"]),
                         st.sampled_from(["", "a b", "é1", 'a"b']))  # the second kind: the store builds outcomes
# a batch's shared fresh head (status, first_seen, region, policy_version); fresh_mid None: not the common form
FRESH_HEADS = st.tuples(st.sampled_from([200, 200, 202]),
                        st.sampled_from([1_700_000_000.0, 0.0, -0.0, 1e300, 5e-324, 0.1, math.nan]), TEXTS, TEXTS)


@st.composite
def fresh_items(draw, key):
    """A batch for ``put_many(..., mid)``: fresh rows ``(tenant, pcs_id, digest, body)`` (the
    verifier's common outcome, none built) mixed with ``(tenant, pcs_id, outcome)`` items."""
    head = draw(FRESH_HEADS)
    entries = draw(st.lists(st.tuples(key, st.one_of(st.tuples(FRESH_DIGESTS, st.binary(max_size=40)), outcomes())),
                            max_size=8))
    return head, entries


@st.composite
def operations(draw):
    pool = draw(st.lists(KEYS, min_size=1, max_size=6, unique=True))
    key = st.sampled_from(pool)
    put = st.tuples(st.just("put"), st.lists(st.tuples(key, outcomes()), max_size=8), NOWS, TTLS)
    fresh = st.tuples(st.just("fresh"), fresh_items(key), NOWS, TTLS)
    get = st.tuples(st.just("get"), st.lists(key, max_size=8), NOWS, st.just(0.0))
    return pool, draw(st.lists(st.one_of(put, fresh, get), min_size=1, max_size=8))


# one case for each planted C bug (test_planted_c_bugs_are_caught): a region with a quote in the
# common form (bug 2), a held key written again (bug 1), a lookup hit then a miss (bug 3), a fresh row (bug 4)
_QUOTED = StoredOutcome("ab" * 32, 200, b"{}", 1_700_000_000.0, 'eu"west', "1.0.0")
_PLAIN = StoredOutcome("cd" * 32, 200, b"{}", 1_700_000_000.0, "eu", "1.0.0")
CAUGHT_BY_EXAMPLE = ([("t", "p"), ("t", "q"), ("t", "r")], [
    ("put", [(("t", "p"), _QUOTED)], NOW_VALUES[0], 60.0),
    ("put", [(("t", "p"), _PLAIN)], NOW_VALUES[0], 60.0),
    ("get", [("t", "p"), ("t", "q")], NOW_VALUES[0], 0.0),
    ("fresh", ((200, 1_700_000_000.0, "eu", "1.0.0"), [(("t", "r"), ("ab" * 32, b"{}"))]), NOW_VALUES[0], 60.0),
])


def _fresh_args(head, entries):
    """The items and ``mid`` of a drawn fresh batch (mid None: the common form does not apply)."""
    items = [(t, p, *o) if type(o) is tuple else (t, p, o) for (t, p), o in entries]
    return items, sq.fresh_mid(*head)


def _open(path: str, pure: bool) -> SqliteStore:
    """A store on ``path`` whose batch rows are the reference (``pure``) or, where built, the compiled ones."""
    if pure:
        with accel.pure():
            return SqliteStore(path, layout="keyed")
    return SqliteStore(path, layout="keyed")


def _rows_of(path: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT tenant, pcs_id, expires_at, outcome FROM dedup ORDER BY tenant, pcs_id").fetchall()
    finally:
        conn.close()


def _same(got, want) -> None:
    """Answers of put_many: the written item's own object, or the loser's stored bytes."""
    assert len(got) == len(want)
    for (won_got, o_got), (won_want, o_want) in zip(got, want, strict=True):
        assert won_got is won_want
        if won_want:
            assert o_got is o_want
        else:
            assert type(o_got) is bytes and o_got == o_want


def rows_property(open_rows, planted: bool = False):
    """The property over ``open_rows`` (the compiled opener, or a planted build's)."""

    @(PLANTED if planted else ROWS)
    @given(drawn=operations())
    @example(drawn=CAUGHT_BY_EXAMPLE)
    def prop(drawn):
        pool, ops = drawn
        with tempfile.TemporaryDirectory(prefix="flk-rows-") as d:
            ref_path, fast_path = os.path.join(d, "ref.db"), os.path.join(d, "fast.db")
            with accel.pure():
                ref_store, fast_store = SqliteStore(ref_path, layout="keyed"), SqliteStore(fast_path, layout="keyed")  # file, schema, WAL mode
            ref = SqlRows(ref_store._conn())
            fast = open_rows(fast_path, 1000, "; ".join(sq._PRAGMAS), sq._UPSERT_ONE, sq._GET, StoredOutcome)
            try:
                for op, batch, now, ttl in ops:
                    if op == "get":
                        assert fast.get_many(batch, now) == ref.get_many(batch, now)
                        continue
                    if op == "fresh":
                        items, mid = _fresh_args(*batch)
                        if items and mid is not None:  # answers: None (written) or the winner's bytes
                            assert fast.put_many(items, now, now + ttl, None, mid) == \
                                ref.put_many(items, now, now + ttl, None, mid)
                            keys = [(t[0], t[1]) for t in items]  # what was written, read back at once
                            assert fast.get_many(keys, now) == ref.get_many(keys, now)
                        continue
                    items = [(t, p, o) for (t, p), o in batch]
                    if not items:
                        continue
                    _same(fast.put_many(items, now, now + ttl), ref.put_many(items, now, now + ttl))
                every = pool + pool[::-1]  # every key, live ones and absent ones mixed, at every time
                for now in NOW_VALUES:
                    assert fast.get_many(every, now) == ref.get_many(every, now)
                fast.close()
                assert _rows_of(fast_path) == _rows_of(ref_path)
            finally:
                fast.close()
                ref_store.close()
                fast_store.close()

    return prop


@needs_compiled
@pytest.mark.differential("open_rows")
def test_compiled_rows_answer_as_the_reference():
    """Same answers after every call and the same rows on disk, over arbitrary batches."""
    if COMPILED is None:
        pytest.fail("the compiled SQLite rows are not built (CI needs libsqlite3-dev: make setup)")
    rows_property(accel.ACTIVE.open_rows)()


def test_the_store_reads_what_the_other_path_wrote(tmp_path):
    """A file written through one path's store is read alike through the other's (both
    orders), and the contract answers (winner objects) are the same on both."""
    now = 1_000_000_000.0
    items = [("t", f"p{i % 7}", StoredOutcome(f"{i:064x}", 200 + 2 * (i % 2), b'{"n":%d}' % i, now, "eu", "1"))
             for i in range(20)] + [("bench", "é\x00", OddOutcome("x y", 202, b"", -0.0, 'e"u', "\\"))]
    stores = {}
    for name in ("pure", "compiled"):
        path = str(tmp_path / f"{name}.db")
        store = _open(path, pure=name == "pure")
        assert store.rows_path == ("pure" if name == "pure" or COMPILED is None else "compiled")
        stores[name] = (store, path)
        got = store.put_many_if_absent(items, now, 60.0)
        assert [won for won, _ in got] == [True] * 7 + [False] * 13 + [True]
        assert [o.to_bytes() for _, o in got] == [items[i % 7][2].to_bytes() for i in range(20)] + [items[20][2].to_bytes()]
        store.close()
    assert _rows_of(stores["pure"][1]) == _rows_of(stores["compiled"][1])
    keys = [(t, p) for t, p, _ in items] + [("t", "absent")]
    for name, other in (("pure", "compiled"), ("compiled", "pure")):
        path = stores[name][1]
        reader = _open(path, pure=other == "pure")
        found = reader.get_many(keys, now + 1)
        assert [None if o is None else o.to_bytes() for o in found] == \
            [items[i % 7][2].to_bytes() for i in range(20)] + [items[20][2].to_bytes(), None]
        assert reader.get_many(keys, now + 60) == [None] * len(keys)  # expired for both
        again = reader.put_many_if_absent(items[:1], now + 60, 5.0)  # an expired row is replaced
        assert again[0][0] is True
        reader.close()


@settings(ROWS, max_examples=80)
@given(drawn=operations())
def test_fresh_puts_are_puts_of_the_built_outcomes(drawn):
    """``SqliteStore.put_many_fresh_if_absent`` (fresh rows, no StoredOutcome built; on the
    compiled rows where built, and on the reference) answers and writes exactly what
    ``put_many_if_absent`` of the built outcomes does (the pure store: the reference)."""
    pool, ops = drawn
    with tempfile.TemporaryDirectory(prefix="flk-fresh-") as d:
        stores = [_open(os.path.join(d, f"{k}.db"), pure=pure) for k, pure in enumerate((True, False, True))]
        ref, fast, pure = stores
        try:
            for op, batch, now, ttl in ops:
                if op == "get":
                    want = [_plain(o) for o in ref.get_many(batch, now)]
                    assert [_plain(o) for o in fast.get_many(batch, now)] == want
                    continue
                if op == "put":
                    head, entries = (200, now, "eu", "1"), [(k, ("ab" * 32, b"{}")) for k, _ in batch]
                else:
                    head, entries = batch
                if not entries:
                    continue
                items, _ = _fresh_args(head, entries)
                status, first_seen, region, version = head
                built = [(t[0], t[1], StoredOutcome(t[2], status, t[3], first_seen, region, version))
                         if len(t) == 4 else t for t in items]
                want = [None if won else o.to_bytes() for won, o in ref.put_many_if_absent(built, now, ttl)]
                for store in (fast, pure):
                    got = store.put_many_fresh_if_absent(items, head, now, ttl)
                    assert [None if o is None else o.to_bytes() for o in got] == want
            rows = [_rows_of(store.path) for store in stores]
            assert rows[1] == rows[0] and rows[2] == rows[0]
        finally:
            for store in stores:
                store.close()


def test_a_bad_key_fails_on_both_paths_and_leaves_the_store_usable(tmp_path):
    """A lone surrogate cannot be bound (UTF-8): the same exception on both paths, no
    transaction left open; the store answers the next batch."""
    now = 1_000_000_000.0
    out = StoredOutcome("ab", 200, b"{}", now, "eu", "1")
    for name in ("pure", "compiled"):
        path = str(tmp_path / f"{name}.db")
        store = _open(path, pure=name == "pure")
        with pytest.raises(UnicodeEncodeError):
            store.put_many_if_absent([("t", "ok", out), ("t", "\ud800", out)], now)
        with pytest.raises(UnicodeEncodeError):
            store.get_many([("t", "\ud800")], now)
        assert store.put_many_if_absent([("t", "ok", out)], now) == [(True, out)]
        assert store.count(now) == 1
        store.close()


def _plain(answer):
    """A put answer ``(won, outcome)`` or a get answer (outcome or None), in bytes."""
    if type(answer) is tuple:
        return answer[0], answer[1].to_bytes()
    return None if answer is None else answer.to_bytes()


BAD_TENANTS = st.one_of(st.sampled_from(["", "a b", "t" * 129, "a,b", "é", None, 7, b"t"]), st.text(max_size=4))
BAD_PCS_IDS = st.one_of(st.sampled_from(["", "x" * 257, "a\nb", None, 3, b"p"]), PCS_IDS)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(keys=st.lists(st.tuples(st.one_of(st.sampled_from(TENANTS), BAD_TENANTS),
                               st.one_of(PCS_IDS, BAD_PCS_IDS)), min_size=1, max_size=5))
def test_the_key_rules_answer_alike_on_both_paths(keys):
    """The store's key check (tenant-id rule, pcs_id of 1 to 256 characters without a
    newline): the compiled rows pass the common case and leave the rest to
    ``check_keys``; both paths raise the same error for the same first bad key, or answer
    alike, in ``get_many`` and ``put_many_if_absent``."""
    now = 1_000_000_000.0
    out = StoredOutcome("ab", 200, b"{}", now, "eu", "1")
    answers = []
    with tempfile.TemporaryDirectory(prefix="flk-keys-") as d:
        for name in ("pure", "compiled"):
            path = os.path.join(d, f"{name}.db")
            store = _open(path, pure=name == "pure")
            got = []
            for call, args in ((store.put_many_if_absent, ([(t, p, out) for t, p in keys], now)),
                               (store.get_many, (keys, now))):
                try:
                    got.append([_plain(r) for r in call(*args)])
                except (ValueError, TypeError) as exc:
                    got.append((type(exc), str(exc)))
            store.close()
            answers.append(got)
    assert answers[0] == answers[1]


def test_a_locked_file_is_unavailable_on_the_compiled_path(tmp_path):
    """A write lock held past busy_timeout: StoreUnavailable (fail closed), then recovery."""
    path = str(tmp_path / "d.db")
    store = SqliteStore(path, busy_timeout_ms=100, layout="keyed")
    out = StoredOutcome("ab", 200, b"{}", 1.0, "eu", "1")
    hog = sqlite3.connect(path, isolation_level=None)
    hog.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.put_many_if_absent([("t", "p", out)], 10.0)
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    assert store.put_many_if_absent([("t", "p", out)], 10.0) == [(True, out)]
    store.close()
    with pytest.raises(StoreUnavailable):
        store.get_many([("t", "p")], 10.0)


# ------------------------------------------------------------ planted C bugs

@needs_compiled
@pytest.mark.parametrize("bug", [1, 2, 3, 4])
def test_planted_c_bugs_are_caught(bug):
    """Every row counted as written (bug 1), a region's quote not escaped (bug 2), a lookup
    miss after a hit answered with the hit (bug 3), a fresh row's digest written one digit
    short (bug 4): the property fails; the real build passes."""
    with pytest.raises(AssertionError):
        rows_property(planted_build(bug).open_rows, planted=True)()
