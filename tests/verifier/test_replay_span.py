"""A replay span -- records received at different times -- verified in ONE core batch.

``VerifyBatch.from_span`` (cross-region replay's shipped spans, :func:`core.replay_batch`)
verifies, decides and answers each record at its own ``received_at``: the keys active at
that time (a key's ``not_before``/``not_after`` edge inside the span), the ``first_seen``
of that time in the stored outcome and its 200 body (clock skew: ``-0.0``, ``0.0``, times
before a key, far ahead). The reference is the generator pipeline, one record at a time
with ``now = received_at`` (``Verifier.handle(..., replay=True)``); the span must answer
the same responses, store the same outcomes and emit the same events, on the compiled path
(``accept_each``) and on the pure one, with and without hooks (step 5 looked up), on the
memory and the SQLite store. The store calls of a span are made at its latest time: with a
TTL longer than the span that decides nothing (the TTL edge of a span is pinned apart).

The check must catch a core that verifies every record at the span's first time:
``test_a_span_at_its_first_time_is_caught`` runs the property on such a core class.
"""

from __future__ import annotations

import json
import tempfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flk.impl.agent import factory
from flk.impl.dedup import open_store
from flk.impl.storage.inbox import InboxRecord
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier import core
from flk.impl.verifier.pipeline import Limits, Request, Verifier, run_sync

from .pcsgen import HMAC_A, HMAC_A2, HMAC_B, registry
from .test_fastpath_differential import (
    DIFF,
    _flag_hook,
    compact,
    pure_core,
    realistic_pcs,
    request_bodies,
)

T0 = 1_700_000_000.0  # tenant tw's first key becomes active
T1 = T0 + 3600.0  # ... and is rotated out: the second key is active from here (exclusive end of the first)
TIMES = (T0, T0 + 0.5, T1 - 0.25, T1, T1 + 0.25, T0 - 1.0, 0.0, -0.0, 5e9, T0 + 1e-6)
LONG_TTL = Limits(ttl_s=1e12)  # no TTL edge inside a span (pinned by its own test)


def _registry():
    return registry(tw={"alg": "hmac", "keys": [
        {"id": "w1", "secret": HMAC_A.decode(), "not_before": T0, "not_after": T1},
        {"id": "w2", "secret": HMAC_A2.decode(), "not_before": T1}]})


def _signed(i: int, key: bytes, **change) -> bytes:
    doc = {k: v for k, v in realistic_pcs(i).items() if k != "sig"}
    return compact(factory.sign({**doc, **change}, key))


POOL = [_signed(0, HMAC_A), _signed(1, HMAC_A), _signed(0, HMAC_A2), _signed(2, HMAC_A2), _signed(0, HMAC_B),
        _signed(0, HMAC_A, coh_star=0.5),  # the same pcs_id as POOL[0], another payload: a conflict
        _signed(3, HMAC_A, r=1.4),  # escalated (202)
        json.dumps(realistic_pcs(1)).encode()]  # POOL[1] spelled otherwise: the same payload
TENANTS = st.sampled_from(["tw", "tw", "tw", "ta", "tb", "", "nobody"])
RECORDS = st.lists(st.tuples(st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), request_bodies()), TENANTS,
                             st.sampled_from(TIMES)), min_size=1, max_size=14)


def _records(picks) -> list[InboxRecord]:
    return [InboxRecord(tenant, t, "eu", body) for body, tenant, t in picks]


def _snapshot(store) -> list:
    out, cursor = [], None
    while True:
        page, cursor = store.scan(cursor, 100, -1e300)
        out += [(t, p, o.to_bytes()) for t, p, o in page]
        if cursor is None:
            return sorted(out)


def _answers(responses) -> list:
    return [(r.status, r.headers, r.body) for r in responses]


def _events(events) -> list[str]:
    # a batch answers its rejections at step 3/4, its writes after them: the events as a multiset
    return sorted(json.dumps(e, sort_keys=True, default=repr) for e in events)


def _reference(records, hooks, store_url):
    verifier = Verifier(_registry(), region="eu", limits=LONG_TTL, hooks=hooks)
    store, events = open_store(store_url), []
    try:
        out = [run_sync(verifier.handle(Request(rec.body, rec.tenant or None), rec.received_at, replay=True),
                        MemoryWal(), store, events.append) for rec in records]
        return _answers(out), _events(events), _snapshot(store)
    finally:
        store.close()


def _span(records, hooks, store_url, core_cls=None):
    verifier = Verifier(_registry(), region="eu", limits=LONG_TTL, hooks=hooks)
    store, events = open_store(store_url), []
    try:
        batch = core.replay_batch(verifier, records, store, sink=events.append, core_cls=core_cls)
        return _answers(batch.responses), _events(events), _snapshot(store)
    finally:
        store.close()


def span_property(core_cls=None):
    """The property: one span batch (``core_cls``) answers, stores and emits what the reference
    does record by record, on the compiled and the pure path."""

    @DIFF
    @example(picks=[(POOL[0], "tw", T0), (POOL[1], "tw", T0 + 0.5)], hooked=False, store="memory")
    @example(picks=[(POOL[0], "tw", T0 + 0.5), (POOL[2], "tw", T1)], hooked=False, store="memory")  # the key edge
    @example(picks=[(POOL[1], "ta", T0), (POOL[0], "ta", -0.0), (POOL[6], "ta", 0.0)], hooked=True, store="memory")
    @given(picks=RECORDS, hooked=st.booleans(), store=st.sampled_from(["memory", "sqlite"]))
    def prop(picks, hooked, store):
        records = _records(picks)
        hooks = (_flag_hook,) if hooked else ()
        with tempfile.TemporaryDirectory() as d:
            url = (lambda name: "memory") if store == "memory" else (lambda name: f"sqlite:///{d}/{name}.db")
            want = _reference(records, hooks, url("ref"))
            assert _span(records, hooks, url("fast"), core_cls) == want
            with pure_core():
                assert _span(records, hooks, url("pure"), core_cls) == want

    return prop


@pytest.mark.differential("accept_each")
def test_a_span_answers_as_each_record_at_its_own_time():
    span_property()()


def test_a_span_is_one_batch_with_a_time_per_record():
    """A span of several times is one batch (``times``, ``now`` its latest time); records of one
    time make the common batch; ``-0.0`` and ``0.0`` are two times (their first_seen differ)."""
    v = Verifier(_registry(), region="eu")
    recs = _records([(POOL[0], "tw", T0 + 0.5), (POOL[1], "tw", T0), (POOL[2], "tw", T1)])
    batch = core.VerifyBatch.from_span(v, recs)
    assert batch.times == [T0 + 0.5, T0, T1] and batch.now == T1
    assert [batch.at(item) for item in batch.items] == [T0 + 0.5, T0, T1]
    one = core.VerifyBatch.from_span(v, recs[:1] * 3)
    assert one.times is None and one.now == T0 + 0.5
    zeros = core.VerifyBatch.from_span(v, _records([(POOL[0], "ta", 0.0), (POOL[1], "ta", -0.0)]))
    assert zeros.times is not None
    batch.verify()
    batch.skip_lookup()
    firsts = [w[2].first_seen for w in batch.writes()]
    assert firsts == [T0 + 0.5, T0, T1]  # POOL[2] is signed by the key active from T1


def test_a_span_decides_the_ttl_at_its_latest_time():
    """The store time of a span is its latest ``received_at``: a key whose entry expires inside
    the span's time range is judged at the span's end (the applier's rule as well)."""
    ttl = 100.0
    v = Verifier(_registry(), region="eu", limits=Limits(ttl_s=ttl))
    store = open_store("memory")
    core.replay_batch(v, _records([(POOL[0], "ta", T0)]), store)
    # held until T0 + ttl; the span's second record is its replay at T0 + 50, the third another key later
    span = _records([(POOL[0], "ta", T0 + 50.0), (POOL[1], "ta", T0 + ttl + 1.0)])
    batch = core.replay_batch(v, span, store)
    assert batch.now == T0 + ttl + 1.0
    assert batch.responses[0].status == 200 and batch.responses[0].header("Idempotent-Replayed") is None
    # one record at a time, the replay at T0 + 50 would still find the entry of T0
    alone = open_store("memory")
    core.replay_batch(v, _records([(POOL[0], "ta", T0)]), alone)
    assert core.replay_batch(v, span[:1], alone).responses[0].header("Idempotent-Replayed") is not None


class _FirstTimeSpan(core.VerifyBatch):
    """A planted bug: a span verified, decided and answered at its first record's time."""

    @classmethod
    def from_span(cls, verifier, records, **kw):
        batch = super().from_span(verifier, records, **kw)
        if batch.times is not None:
            batch.times = [batch.times[0]] * len(batch.times)
        return batch


def test_a_span_at_its_first_time_is_caught():
    with pytest.raises(AssertionError):
        span_property(_FirstTimeSpan)()
