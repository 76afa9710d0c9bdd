"""Cross-region replay verifies a shipped span in ONE core batch, each record at its own time.

:class:`flk.impl.replication.applying.ReplayApplier` hands a span of one origin region's
records -- received by many submit batches, at many times -- to one core batch
(``VerifyBatch.from_span``: one compiled ``accept_each`` call per tenant). It must end as
replaying the records one at a time does (``apply``: a batch of one, at the record's own
time): the same answers, candidates, winners, reconciler reports and store contents, over
key-rotation edges inside a span, clock skew (``-0.0``, ``0.0``, far ahead), in-span
duplicates and conflicts, records refused at home, and two origin regions in one chunk;
``replay_batch`` (no answers, a shared memo) ends the same as ``apply_many``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verifier.test_replay_span import LONG_TTL, POOL, T1, TIMES, _registry

from flk.impl.core import accel
from flk.impl.dedup import open_store
from flk.impl.replication.applying import ReplayApplier, ReplayMemo
from flk.impl.storage.inbox import InboxRecord
from flk.impl.storage.walformat import A_CONFLICT, A_REJECTED, A_STORED, AnswerNote
from flk.impl.verifier.pipeline import Verifier

NOTES = (None, None, AnswerNote(0, A_STORED, 200), AnswerNote(0, A_CONFLICT, 409, "d" * 64),
         AnswerNote(0, A_REJECTED, 401))
PICKS = st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(["tw", "tw", "ta", "tb", ""]),
                           st.sampled_from(TIMES), st.sampled_from(["eu", "eu", "us"]),
                           st.integers(0, len(NOTES) - 1)), min_size=1, max_size=16)
LATER = 6e9  # the reader's clock (reports carry it)


def _recs(picks) -> list[InboxRecord]:
    return [InboxRecord(tenant, t, region, POOL[i], NOTES[n], k) for k, (i, tenant, t, region, n) in enumerate(picks)]


def _applier(tenants, seen, memo=None) -> ReplayApplier:
    return ReplayApplier(Verifier(tenants, region="xx", limits=LONG_TTL), open_store("memory"),
                         lambda *x: seen.append(x), memo=memo)


def _snap(store) -> list:
    return sorted(store.scan(None, 1000, 0.0)[0], key=lambda e: (e[0], e[1]))


def _result(x) -> tuple:
    return (x.response.status, x.response.body, x.stored, x.candidate, x.winner, x.home_rejected)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(picks=PICKS)
def test_a_span_replays_as_its_records_one_at_a_time(picks):
    recs = _recs(picks)
    tenants = _registry()
    seen_span, seen_one, seen_memo = [], [], []
    span, one = _applier(tenants, seen_span), _applier(tenants, seen_one)
    got = span.apply_many(recs, LATER)
    want = [one.apply(rec, LATER) for rec in recs]
    assert [_result(x) for x in got] == [_result(x) for x in want]
    assert seen_span == seen_one and _snap(span.store) == _snap(one.store)
    memo = ReplayMemo(uses=2)
    for _ in range(2):  # the second applier takes the first one's plan
        quiet = _applier(tenants, seen_memo, memo)
        quiet.replay_batch(recs, LATER)
        assert seen_memo == seen_one and _snap(quiet.store) == _snap(one.store)
        assert (quiet.applied, quiet.stored, quiet.home_rejected) == (one.applied, one.stored, one.home_rejected)
        seen_memo.clear()


@pytest.mark.skipif(accel.entry("accept_each").compiled is None, reason="compiled core not active")
def test_a_shipped_span_is_one_compiled_call():
    """200 records of one tenant received by 100 submit batches (two per time, across a key
    rotation): one ``accept_each`` call, no per-time batch calls, every record verified at its
    own time (the records signed by the key retired at T1 are accepted before T1 only)."""
    recs = [InboxRecord("tw", T1 - 50.0 + k // 2, "eu", POOL[0] if k % 2 else POOL[3]) for k in range(200)]
    seen: list = []
    applier = _applier(_registry(), seen)
    with accel.counting() as calls:
        applier.replay_batch(recs, LATER)
    assert calls["accept_each"] == 1 and calls["accept_batch"] == calls["accept_v1"] == calls["accept_scan"] == 0
    # POOL[0] (key w1) is stored from its first record (before T1); POOL[3] (key w2) from T1 on
    stored = {(t, p): o for t, p, o in applier.store.scan(None, 1000, 0.0)[0]}
    assert sorted(o.first_seen for o in stored.values()) == [T1 - 50.0, T1]
    assert applier.stored == 2 and applier.applied == 200
