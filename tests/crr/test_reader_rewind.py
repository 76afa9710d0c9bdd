"""``Reader.rewind``: all streams (an operator's repair, the ``reader_rewind`` fault: counted) or
only the named sources' streams -- a region's own and its ``/w<n>`` workers', never a region whose
name merely begins the same (``eux`` is not ``eu``) -- the backfill of a widened CRR policy
(:func:`flk.impl.operator.crr.apply`). The watermarks saved are the ones kept in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.replication.reading import Reader, Topology
from flk.impl.replication.stream import WatermarkFile
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

STREAMS = st.sampled_from(["eu", "eu/w1", "eu/w12", "eux", "eux/w1", "us", "us/w3", "ap"])


def _reader(fs) -> Reader:
    return Reader(None, Topology.full_mesh(["eu", "eux", "us", "ap"], "us", include_self=True), None,
                  "/crr/read.json", fs=fs)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(STREAMS, st.integers(1, 10**6)), st.none() | st.lists(st.sampled_from(["eu", "eux", "us"])))
def test_a_rewind_forgets_exactly_the_named_sources_streams(marks, sources):
    fs = CrashableMemoryFileSystem()
    reader = _reader(fs)
    reader.watermarks = dict(marks)
    reader.rewind(sources)
    if sources is None:
        want = {}
    else:
        want = {k: (0 if k.split("/w")[0] in sources else v) for k, v in marks.items()}
    assert reader.watermarks == want
    assert reader.rewinds == (1 if sources is None else 0)
    assert WatermarkFile("/crr/read.json", fs).load() == want
