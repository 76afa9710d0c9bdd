"""The runner's sampler polls /v1/crr/status once a second; a region's ``crr.applied`` event is
timed by the reader's own stamp of its last apply (``read.last_applied_at``), so the real
convergence time is not up to a poll period late."""

from __future__ import annotations

import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.lab.cluster.runner import SAMPLE_S, ClusterRun


@given(offset=st.floats(-5.0, 5.0, allow_nan=False), polled=st.floats(1.0, 100.0, allow_nan=False),
       stamp_kind=st.sampled_from(["number", "none", "text"]))
def test_an_apply_is_timed_by_the_servers_stamp_when_it_falls_in_the_poll_period(offset, polled, stamp_kind):
    """The sampler polls once a second: a region's crr.applied event takes the reader's own
    last_applied_at when that lies within the poll period before the poll, else the poll's time
    (a skewed server clock, or no stamp)."""
    run = types.SimpleNamespace(wall_t0=1_000.0)
    stamp = {"number": 1_000.0 + polled + offset, "none": None, "text": "soon"}[stamp_kind]
    got = ClusterRun.applied_at(run, stamp, polled)
    rel = stamp - run.wall_t0 if stamp_kind == "number" else None
    inside = rel is not None and polled - SAMPLE_S - 0.5 <= rel <= polled
    assert got == (rel if inside else polled)
    assert got <= polled and (stamp_kind == "number" or got == polled)
    if stamp_kind == "number" and -SAMPLE_S <= offset <= -1e-6:
        assert got == pytest.approx(polled + offset)  # a stamp well inside the period is taken
