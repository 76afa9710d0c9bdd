"""The direct path's header lines (:func:`flk.impl.server.httpguard._header_block`): the
bytes uvicorn's ``send`` writes for a header list, from a bounded cache of blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.server import httpguard

names = st.binary(min_size=1, max_size=12).filter(lambda b: b":" not in b and b"\r" not in b and b"\n" not in b)
values = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)
header_lists = st.lists(st.tuples(names, values | values.map(bytearray)), max_size=6)


def uvicorn_lines(headers) -> bytes:
    """What uvicorn's httptools ``send`` writes for ``headers`` (the direct path's reference)."""
    out = []
    for name, value in headers:
        out.extend((name.lower(), b": ", value, b"\r\n"))
    return b"".join(out)


@given(st.lists(header_lists, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_header_block_is_uvicorns_bytes_cached_or_not(lists) -> None:
    for headers in lists + lists:  # the second time from the cache (or rebuilt: unhashable values)
        assert httpguard._header_block(headers) == uvicorn_lines(headers)


def test_header_block_cache_stays_bounded_and_right_when_it_starts_again() -> None:
    httpguard._BLOCKS.clear()
    lists = [[(b"Content-Type", b"application/json"), (b"x-n", b"%d" % i)] for i in range(3 * httpguard._BLOCKS_MAX)]
    for headers in lists:
        assert httpguard._header_block(headers) == uvicorn_lines(headers)
        assert len(httpguard._BLOCKS) <= httpguard._BLOCKS_MAX
    assert httpguard._header_block(lists[0]) == b"content-type: application/json\r\nx-n: 0\r\n"
