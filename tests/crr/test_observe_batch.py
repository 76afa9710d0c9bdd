"""Batched reconciler observation equals one observation at a time.

``Reconciler.observe_batch`` (one lock; the store's batch forms when it has
them: ``observe_plain``, ``put_first``, ``get_many``/``put_many``) is the path
cross-region replay takes;
``Reconciler.observe`` is the reference. Over generated sequences of outcomes
for a few keys -- re-deliveries, other payloads (conflicts), other statuses
(unsafe conflicts), earlier first-seen times (authoritative changes) -- both
must leave the same records, counters and audit entries, and the batch must
name exactly the observations after which the key's record is a conflict. The
simulator's compact store (``observe_plain``, ``put_first``), the plain memory
store (none of them) and the service's SQLite store (one transaction per batch,
the batch's records read in one query and written in one call) are checked.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome
from flk.impl.replication.reconcile import (
    MemoryAuthoritativeStore,
    Reconciler,
    SqliteAuthoritativeStore,
)
from flk.sim.replication import CompactAuthoritativeStore

KEYS = [("t0", "a" * 64), ("t0", "b" * 64), ("t1", "a" * 64)]
OUTCOMES = [StoredOutcome(d * 64, status, b'{"ok":true}', first_seen, region, "p1")
            for d in "01" for status in (200, 202) for first_seen in (10.0, 5.0) for region in ("eu", "us")]

observation = st.tuples(st.sampled_from(KEYS), st.integers(0, len(OUTCOMES) - 1), st.floats(0, 100))
runs = st.lists(st.lists(observation, min_size=1, max_size=6), min_size=1, max_size=6)


def _reconciler(store_kind: str, mode: str, audit: list, root: str = "") -> Reconciler:
    if store_kind == "sqlite":
        store = SqliteAuthoritativeStore(os.path.join(root, f"auth-{len(os.listdir(root))}.sqlite3"))
    else:
        store = CompactAuthoritativeStore() if store_kind == "compact" else MemoryAuthoritativeStore()
    return Reconciler("eu", store=store, mode=mode, audit=lambda **e: audit.append(e))


def _state(r: Reconciler) -> list:
    return [(t, p, rec) for t, p, rec in r.store.items()]


@settings(max_examples=150, deadline=None)
@given(batches=runs, store_kind=st.sampled_from(["compact", "memory", "sqlite"]),
       mode=st.sampled_from(["manual", "auto-safe"]))
def test_observe_batch_equals_observing_one_at_a_time(batches, store_kind, mode):
    one_audit: list = []
    many_audit: list = []
    with tempfile.TemporaryDirectory() as root:
        one = _reconciler(store_kind, mode, one_audit, root)
        many = _reconciler(store_kind, mode, many_audit, root)
        try:
            _compare(batches, one, many)
        finally:
            for r in (one, many):
                getattr(r.store, "close", lambda: None)()
    assert many_audit == one_audit


def _compare(batches: list, one: Reconciler, many: Reconciler) -> None:
    for batch in batches:
        now = batch[0][2]
        expected = []
        for (tenant, pcs_id), k, _ in batch:
            if one.observe(tenant, pcs_id, OUTCOMES[k], now).conflict:
                expected.append((tenant, pcs_id))
        got = many.observe_batch([(t, p, OUTCOMES[k]) for (t, p), k, _ in batch], now)
        assert got == expected
    assert _state(many) == _state(one)
    assert many.counters == one.counters and many.metrics() == one.metrics()


def test_a_failing_batch_on_sqlite_leaves_none_of_its_puts(tmp_path):
    """The SQLite store takes a batch's puts in one transaction: an observation that raises
    midway rolls the batch's earlier puts back (replaying the batch observes them again)."""
    store = SqliteAuthoritativeStore(str(tmp_path / "auth.sqlite3"))
    r = Reconciler("eu", store=store)
    (t, p), a = KEYS[0], OUTCOMES[0]
    r.observe_batch([(t, p, a)], 1.0)
    with pytest.raises(AttributeError):
        r.observe_batch([(KEYS[1][0], KEYS[1][1], a), (t, p, None)], 2.0)  # type: ignore[list-item]
    assert [k for k, *_ in store.items()] == [t] and store.get(*KEYS[1]) is None
    r.observe_batch([(KEYS[1][0], KEYS[1][1], a)], 3.0)
    assert store.get(*KEYS[1]).authoritative == a
    store.close()


def test_observe_batch_names_a_conflict_and_a_first_sighting_is_not_one():
    """A sanity anchor for the generated test: two payloads of one key in one batch are a
    conflict after the second observation only."""
    r = Reconciler("eu", store=CompactAuthoritativeStore())
    (t, p), a, b = KEYS[0], OUTCOMES[0], OUTCOMES[8]
    assert a.payload_digest != b.payload_digest
    assert r.observe_batch([(t, p, a), (t, p, a), (t, p, b)], 1.0) == [(t, p)]
    assert r.metrics()["conflicts"] == 1 and r.authoritative(t, p).conflict
