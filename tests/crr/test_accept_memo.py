"""``AcceptMemo``: a region's submit batch keeps each request's ``accept_v1`` answer and the
applier that replays the request's inbox record takes it instead of computing it again (a
driver of several regions in one process: the simulator). An answer is a function of the
body, the tenant's keys active at the receive time, the signal parameters and the answer
parts (time, policy version, region): a replay through the memo must end exactly as one
without it -- answers, candidates, winners, reconciler reports, store contents -- over key
rotation edges, clock skew (``-0.0``), other regions, tenants the compiled path does not take
and bodies it refuses; and a replay whose tenant's keys changed since the submit batch (the
same body, time and region) must not take the kept answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verifier.pcsgen import HMAC_A, registry
from verifier.test_replay_span import LONG_TTL, POOL, T0, TIMES, _registry

from flk.impl.core import accel
from flk.impl.dedup import open_store
from flk.impl.replication.applying import ReplayApplier
from flk.impl.storage.inbox import InboxRecord
from flk.impl.verifier.core import AcceptMemo, VerifyBatch
from flk.impl.verifier.pipeline import Request, Verifier

COMPILED = accel.entry("accept_each").compiled is not None
PICKS = st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(["tw", "tw", "ta", "tb", "", "nobody"]),
                           st.sampled_from(TIMES), st.sampled_from(["eu", "eu", "us"])), min_size=1, max_size=16)
LATER = 6e9  # the reader's clock


def _submit(tenants, picks, memo: AcceptMemo) -> None:
    """Each request through its home region's submit batch (one batch per region and time)."""
    batches: dict[tuple[str, float], list] = {}
    for i, tenant, t, region in picks:
        batches.setdefault((region, repr(t)), []).append(Request(POOL[i], tenant or None))
    for (region, t), requests in batches.items():
        batch = VerifyBatch(Verifier(tenants, region=region, limits=LONG_TTL), float(t))
        batch.accept_memo = memo
        batch.admit(requests)
        batch.verify()


def _replayed(tenants, recs, memo: AcceptMemo | None) -> tuple:
    seen: list = []
    applier = ReplayApplier(Verifier(tenants, region="xx", limits=LONG_TTL), open_store("memory"),
                            lambda *x: seen.append(x), accept_memo=memo)
    got = applier.apply_many(recs, LATER)
    results = [(x.response.status, x.response.body, x.stored, x.candidate, x.winner) for x in got]
    return results, seen, sorted(applier.store.scan(None, 1000, 0.0)[0], key=lambda e: (e[0], e[1]))


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(picks=PICKS)
def test_a_replay_through_the_memo_ends_as_one_without_it(picks):
    tenants = _registry()
    recs = [InboxRecord(tenant, t, region, POOL[i]) for i, tenant, t, region in picks]
    memo = AcceptMemo()
    _submit(tenants, picks, memo)
    assert _replayed(tenants, recs, memo) == _replayed(tenants, recs, None)
    HITS.append(memo.hits)


HITS: list[int] = []


def test_the_property_took_answers():
    """The property above is not vacuous: its replays took kept answers."""
    if not HITS:
        test_a_replay_through_the_memo_ends_as_one_without_it()
    assert not COMPILED or sum(HITS) > 100


def test_an_answer_is_not_taken_for_other_keys():
    """The same body, time and region, but the tenant's key was revoked since the submit batch:
    the replay computes its own answer (401) and leaves the kept one (200) alone."""
    before = registry(tw={"alg": "hmac", "keys": [{"id": "w1", "secret": HMAC_A.decode(), "not_before": T0}]})
    after = registry(tw={"alg": "hmac", "keys": [{"id": "w1", "secret": HMAC_A.decode(), "not_before": T0,
                                                  "not_after": T0 + 1.0}]})
    memo = AcceptMemo()
    _submit(before, [(0, "tw", T0 + 5.0, "eu")], memo)
    rec = InboxRecord("tw", T0 + 5.0, "eu", POOL[0])
    got = _replayed(after, [rec], memo)
    assert got == _replayed(after, [rec], None)
    assert got[0][0][0] == 401
    if COMPILED:
        assert memo.misses == 1 and memo.hits == 0


@pytest.mark.skipif(not COMPILED, reason="compiled core not active")
def test_every_replayed_answer_is_taken_once():
    picks = [(k % 3, "tw", T0 + 10.0 + k // 4, "eu") for k in range(24)]
    memo = AcceptMemo()
    _submit(_registry(), picks, memo)
    kept = len(memo._kept)
    assert kept > 0
    recs = [InboxRecord(tenant, t, region, POOL[i]) for i, tenant, t, region in picks]
    _replayed(_registry(), recs, memo)
    assert memo.hits == kept and not memo._kept  # one use each: nothing left behind


def test_the_oldest_answers_go_first():
    memo = AcceptMemo(capacity=2)
    memo.keep_many([(b"0", "p"), (b"1", "p"), (b"2", "p")], [(0,), (1,), (2,)])
    assert memo.take_many([(b"0", "p"), None, (b"2", "p"), (b"1", "p"), (b"2", "p")]) == [None, None, (2,), (1,), None]
