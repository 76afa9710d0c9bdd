"""Replication lag bookkeeping: the batch forms give the one-at-a-time answers.

``LagStats.add_many`` (one C-speed pass when every lag is positive, else the clamp
``max(0.0, lag)`` per lag -- a NaN too gives 0.0) must leave the same samples, count
and maximum as ``add`` of each lag; ``lags_since`` is ``now - received_at`` of each
record, in order.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.replication.stream import LagStats, lags_since
from flk.impl.storage.inbox import InboxRecord

lags = st.one_of(st.floats(allow_nan=True), st.integers(-10**6, 10**6), st.just(0.0), st.just(-0.0),
                 st.just(float("nan")), st.floats(min_value=1e-300, max_value=1e300))


def _state(stats: LagStats) -> tuple:
    return ([repr(v) for v in stats.samples], stats.count, repr(stats.max_s))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.lists(lags, max_size=6), max_size=5))
def test_add_many_equals_adding_each(batches):
    one, many = LagStats(), LagStats()
    for batch in batches:
        for lag in batch:
            one.add(lag)
        many.add_many(iter(batch))
    assert _state(many) == _state(one)
    assert all(v >= 0.0 and not math.isnan(v) for v in many.samples)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.floats(0, 2e9), st.lists(st.floats(1e9, 2e9), max_size=8))
def test_lags_since_is_now_less_each_receive_time(now, times):
    recs = [InboxRecord("t0", t, "eu", b"{}") for t in times]
    assert lags_since(now, recs) == [now - t for t in times]
