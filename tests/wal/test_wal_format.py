"""The pure WAL logic: framing, scanning, names, layout, manifests, inbox codec."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.storage.inbox import (
    InboxRecord,
    decode_inbox_record,
    decode_inbox_span,
    encode_inbox_record,
    with_home,
)
from flk.impl.storage.walformat import (
    A_CONFLICT,
    FRAME_OVERHEAD,
    AnswerNote,
    build_manifest,
    check_manifest,
    compact_name,
    encode_frame,
    manifest_bytes,
    manifest_name,
    parse_name,
    plan_layout,
    scan_segment,
    segment_name,
)
from wal.helpers import frame_ends, frames

payload_lists = st.lists(st.binary(max_size=64), min_size=1, max_size=12)


def test_frame_layout_is_length_crc_headercrc_payload():
    import struct
    import zlib

    f = encode_frame(b"abc")
    n, pcrc, hcrc = struct.unpack_from("<III", f)
    assert (n, pcrc, f[12:]) == (3, zlib.crc32(b"abc"), b"abc")
    assert hcrc == zlib.crc32(f[:8])
    assert len(f) == FRAME_OVERHEAD + 3


@settings(max_examples=60, deadline=None)
@given(payloads=payload_lists, data=st.data())
def test_inv_wal_first_truncation_at_any_offset_yields_exactly_the_complete_records(payloads, data):
    """A crash (truncation) at ANY byte offset: the scan keeps exactly the
    records fully written before the cut and calls the rest a torn tail."""
    blob = frames(payloads)
    cut = data.draw(st.integers(0, len(blob)))
    res = scan_segment(blob[:cut], is_last=True)
    ends = frame_ends(payloads)
    complete = sum(1 for e in ends if e <= cut)
    assert res.count == complete
    assert [bytes(blob[o : o + n]) for o, n in res.spans] == payloads[:complete]
    if cut in ends or cut == 0:
        assert res.status == "clean"
    else:
        assert res.status == "torn" and res.valid_end == (ends[complete - 1] if complete else 0)


def test_every_truncation_offset_exhaustively_small():
    payloads = [b"", b"a", b"hello world", bytes(range(40))]
    blob = frames(payloads)
    ends = frame_ends(payloads)
    for cut in range(len(blob) + 1):
        res = scan_segment(blob[:cut], is_last=True)
        assert res.count == sum(1 for e in ends if e <= cut), cut
        assert res.status in ("clean", "torn")


@settings(max_examples=60, deadline=None)
@given(payloads=payload_lists, data=st.data())
def test_a_bit_flip_anywhere_is_reported_at_its_frame_never_skipped(payloads, data):
    blob = bytearray(frames(payloads))
    pos = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    blob[pos] ^= 1 << bit
    starts = [0] + frame_ends(payloads)[:-1]
    frame_start = max(s for s in starts if s <= pos)
    for is_last in (True, False):
        res = scan_segment(bytes(blob), is_last=is_last)
        assert res.status == "corrupt", (pos, bit, res)
        assert res.bad_offset == frame_start
        assert res.count == starts.index(frame_start)  # the records before it are intact


def test_zero_filled_tail_is_torn_in_last_segment_only():
    blob = frames([b"a", b"b"]) + bytes(40)
    res = scan_segment(blob, is_last=True)
    assert (res.status, res.count, res.reason) == ("torn", 2, "zero-filled tail")
    res = scan_segment(blob, is_last=False)
    assert res.status == "corrupt" and res.bad_offset == len(frames([b"a", b"b"]))


def test_incomplete_tail_of_a_non_last_segment_is_corruption():
    blob = frames([b"abc", b"def"])[:-1]
    res = scan_segment(blob, is_last=False)
    assert res.status == "corrupt" and "not the last segment" in res.reason


def test_names_round_trip_and_sort_by_index():
    assert segment_name(7) == "seg-00000000000000000007.log"
    assert parse_name(segment_name(123)) == ("seg", 123)
    assert parse_name(compact_name(9)) == ("compact", 9)
    assert parse_name(manifest_name(segment_name(5))) == ("manifest:seg", 5)
    assert parse_name("seg-1.log") is None and parse_name("notes.txt") is None
    assert parse_name("seg-00000000000000000007.log.tmp") == ("tmp", 0)
    assert parse_name("notes.tmp") is None  # never delete what is not ours
    names = [segment_name(i) for i in (10, 2, 300)]
    assert sorted(names) == [segment_name(i) for i in (2, 10, 300)]


def test_plan_layout_newest_compaction_supersedes_older_files():
    names = [segment_name(0), manifest_name(segment_name(0)), segment_name(10),
             compact_name(10), compact_name(4), segment_name(20), "seg-x.log.tmp",
             manifest_name(segment_name(99)), "README"]
    lay = plan_layout(names)
    assert lay.files == [("compact", 10, compact_name(10)), ("seg", 10, segment_name(10)),
                         ("seg", 20, segment_name(20))]
    assert set(lay.obsolete) == {segment_name(0), manifest_name(segment_name(0)), compact_name(4),
                                 "seg-x.log.tmp", manifest_name(segment_name(99))}
    assert lay.foreign == ["README"]


def test_manifest_detects_any_change():
    data = frames([b"a", b"b", b"c"])
    m = manifest_bytes(build_manifest("seg-x", 4, 3, data))
    assert check_manifest(m, "seg-x", 4, 3, data) == []
    assert check_manifest(m, "seg-x", 4, 3, data[:-1] + b"Z")
    assert check_manifest(m, "seg-x", 5, 3, data)
    assert check_manifest(b"{not json", "seg-x", 4, 3, data)
    doc = json.loads(m)
    doc["count"] = 2
    assert any("count" in p for p in check_manifest(json.dumps(doc).encode(), "seg-x", 4, 3, data))


@settings(max_examples=80, deadline=None)
@given(tenant=st.text(max_size=30), region=st.text(max_size=10),
       ts=st.floats(allow_nan=False, allow_infinity=False), body=st.binary(max_size=200))
def test_inbox_record_round_trips_body_verbatim(tenant, region, ts, body):
    rec = InboxRecord(tenant, ts, region, body)
    try:
        enc = encode_inbox_record(rec)
    except InvalidInput:
        # only lone surrogates cannot be encoded
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in tenant + region)
        return
    back = decode_inbox_record(enc)
    assert back == rec and enc.endswith(body)


@pytest.mark.parametrize("bad", [b"", b"\x02" + bytes(20), b"\x01\x05\x00\x00\x00" + bytes(8) + b"ab"])
def test_inbox_decode_rejects_bad_bytes(bad):
    with pytest.raises(InvalidInput):
        decode_inbox_record(bad)


def test_inbox_encode_rejects_non_finite_time_and_non_bytes_body():
    with pytest.raises(InvalidInput):
        encode_inbox_record(InboxRecord("t", float("nan"), "r", b""))
    with pytest.raises(InvalidInput):
        encode_inbox_record(InboxRecord("t", 1.0, "r", "text"))  # type: ignore[arg-type]


def _decoded(fn, *args):
    try:
        return fn(*args)
    except InvalidInput as exc:
        return ("error", str(exc))


def _with_home(payload, note, index):
    return with_home(decode_inbox_record(payload), note, index)


_record_bytes = st.one_of(
    st.builds(lambda t, r, ts, b: encode_inbox_record(InboxRecord(t, ts, r, b)),
              st.sampled_from(["", "t0", "tenant-é"]), st.sampled_from(["eu", "us", ""]),
              st.floats(allow_nan=False, allow_infinity=False), st.binary(max_size=40)),
    st.binary(max_size=40),  # mostly not a record: the same error either way
    st.builds(lambda lt, lr, ts, rest: bytes([1]) + struct.pack("<HHd", lt, lr, ts) + rest,
              st.integers(0, 6), st.integers(0, 6), st.floats(), st.binary(max_size=12)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_record_bytes, min_size=1, max_size=6), st.binary(max_size=5), st.booleans())
def test_decode_inbox_span_is_decode_with_home(payloads, pad, as_view):
    """A segment's records decoded in place (head strings decoded once per segment) are the
    records ``decode_inbox_record`` + ``with_home`` give -- equal fields, home and index -- or
    the same :class:`InvalidInput`, for records and arbitrary bytes, in a bytes buffer or not."""
    data, spans = pad, []
    for p in payloads:
        spans.append((len(data), len(p)))
        data += p + pad
    buf = memoryview(data) if as_view else data
    names: dict = {}
    for k, (off, ln) in enumerate(spans):
        note = AnswerNote(k, A_CONFLICT, 409, "ab") if k % 2 else None
        want = _decoded(_with_home, data[off: off + ln], note, 7 + k)
        got = _decoded(decode_inbox_span, buf, off, ln, names, note, 7 + k)
        assert got == want
        if not isinstance(want, tuple):
            assert (got.home, got.index, type(got.body)) == (want.home, want.index, bytes)


def test_inbox_record_is_a_frozen_value():
    rec = InboxRecord("t", 1.0, "eu", b"x")
    assert (rec.home, rec.index) == (None, -1)
    assert rec == InboxRecord("t", 1.0, "eu", b"x", AnswerNote(3, A_CONFLICT, 409, "ab"), 3)  # home, index: not compared
    assert rec != InboxRecord("t", 1.0, "us", b"x")
    assert repr(rec) == "InboxRecord(tenant='t', received_at=1.0, region='eu', body=b'x')"
    with pytest.raises(AttributeError):
        rec.tenant = "u"  # type: ignore[misc]


def test_decode_inbox_span_tells_apart_heads_with_the_same_bytes():
    """("t0", "") and ("", "t0") share their head's string bytes: the per-segment cache of
    decoded names must not mix them up."""
    a = encode_inbox_record(InboxRecord("t0", 1.0, "", b"x"))
    b = encode_inbox_record(InboxRecord("", 1.0, "t0", b"y"))
    names: dict = {}
    data = a + b
    first = decode_inbox_span(data, 0, len(a), names, None, 0)
    second = decode_inbox_span(data, len(a), len(b), names, None, 1)
    assert (first.tenant, first.region, second.tenant, second.region) == ("t0", "", "", "t0")
