"""Shipped-segment checks that no frame CRC can stand in for.

Every corruption the older tests make is already caught by the frame CRC, so a
reader that skipped the manifest's SHA-256, or accepted a record of another
region in a stream, passed them. These tests build segments whose frames are
all valid:

* a segment replaced by another of the same length, the same record count and
  valid frames (one record's body changed by a byte, its frame re-encoded):
  only the manifest's SHA-256 differs -- rejected, nothing of it applied;
* a stream of region ``eu`` holding a record of region ``us`` with a manifest
  that matches the bytes exactly -- rejected as foreign, nothing applied.
"""

from __future__ import annotations

import pytest

from flk.impl.replication.stream import SegmentRejected, segment_key, verify_segment
from flk.impl.storage.inbox import InboxRecord, decode_inbox_record, encode_inbox_record
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.storage.walformat import (
    build_manifest,
    check_manifest,
    encode_frame,
    manifest_bytes,
    manifest_name,
    scan_segment,
    segment_name,
)

from .regions import NOW, Region, variants


def two():
    objects = MemoryObjectStore()
    return objects, Region("eu", objects, ["eu", "us"]), Region("us", objects, ["eu", "us"])


def reframed(data: bytes, change) -> bytes:
    """``data``'s records, each passed through ``change(index, record)``, framed anew."""
    res = scan_segment(data, is_last=False)
    assert res.status == "clean"
    recs = [decode_inbox_record(bytes(data[o: o + n])) for o, n in res.spans]
    return b"".join(encode_frame(encode_inbox_record(change(k, r))) for k, r in enumerate(recs))


def same_length_other_body(k: int, rec: InboxRecord) -> InboxRecord:
    body = bytearray(rec.body)
    at = body.index(b'"epoch":') + len(b'"epoch":')  # a digit: still the same length, still JSON
    body[at] = ord("1") if body[at] != ord("1") else ord("2")
    return InboxRecord(rec.tenant, rec.received_at, rec.region, bytes(body)) if k == 0 else rec


def test_segment_bytes_changed_with_valid_frames_fail_only_the_manifest_sha256():
    objects, eu, us = two()
    vs = variants(2, 1)
    for i, (raw, tenant, _, _) in enumerate(vs):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 2)
    key = next(k for k in objects.list("eu/") if k.endswith(".log"))
    original = objects.get(key)
    forged = reframed(original, same_length_other_body)
    assert forged != original and len(forged) == len(original)
    assert scan_segment(forged, is_last=False).status == "clean"  # every frame CRC is valid
    name = key.split("/")[-1]
    mraw = objects.get(segment_key("eu", manifest_name(name)))
    problems = check_manifest(mraw, name, 0, len(vs), forged)
    assert problems == [f"manifest sha256 is {build_manifest(name, 0, 2, original)['sha256']!r}, "
                        f"segment has {build_manifest(name, 0, 2, forged)['sha256']!r}"]
    with pytest.raises(SegmentRejected, match="sha256"):
        verify_segment("eu", name, mraw, forged)
    # through the reader: the forged segment replaces the shipped one; nothing applied
    objects.delete(key)
    objects.put(key, forged)
    us.reader.step(NOW + 3)
    assert len(us.rejects) == 1 and "sha256" in str(us.rejects[0])
    assert us.local() == {} and us.reader.watermarks.get("eu", 0) == 0


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_record_of_another_region_in_a_stream_is_rejected_even_with_a_matching_manifest(position):
    objects, eu, us = two()
    vs = variants(3, 1)
    recs = [InboxRecord(tenant, NOW + i, "us" if i == position else "eu", raw)
            for i, (raw, tenant, _, _) in enumerate(vs)]
    data = b"".join(encode_frame(encode_inbox_record(r)) for r in recs)
    name = segment_name(0)
    mraw = manifest_bytes(build_manifest(name, 0, len(recs), data))
    assert verify_segment("eu", name, mraw, data)[1] == recs  # bytes and manifest agree
    objects.put(segment_key("eu", name), data)
    objects.put(segment_key("eu", manifest_name(name)), mraw)
    us.reader.step(NOW + 5)
    assert len(us.rejects) == 1 and "record of region 'us' in a stream of 'eu'" in str(us.rejects[0])
    assert us.local() == {} and us.reader.watermarks.get("eu", 0) == 0
    # the same segment with every record of eu is applied (the check is not refusing everything)
    _, _, fresh = two()
    good = [InboxRecord(r.tenant, r.received_at, "eu", r.body) for r in recs]
    gdata = b"".join(encode_frame(encode_inbox_record(r)) for r in good)
    objects2 = fresh.objects
    objects2.put(segment_key("eu", name), gdata)
    objects2.put(segment_key("eu", manifest_name(name)), manifest_bytes(build_manifest(name, 0, 3, gdata)))
    fresh.reader.step(NOW + 5)
    assert fresh.rejects == [] and len(fresh.local()) == 3
