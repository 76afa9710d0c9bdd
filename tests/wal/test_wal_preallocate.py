"""The inbox WAL written into zeros written ahead (``SegmentedLog(preallocate=...)``,
``OsFileSystem.open_preallocated``, ``WAL_PREALLOCATE``): every synced record survives a
crash at any point, a torn write into the zeros reads as the log's end (never as damage),
a damaged complete record is still damage, sealed segments end with their last record.

Real files (the memory disk of the simulator appends: it has no ``open_preallocated``)."""

from __future__ import annotations

import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.storage.fs import OsFileSystem
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import SECTOR, encode_frame, manifest_name, scan_segment
from flk.impl.storage.walinspect import inspect_directory
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

CHUNK = 64 * 1024


def _payload(i: int) -> bytes:
    return (b"record-%06d-" % i) + bytes([65 + i % 26]) * (50 + (i * 37) % 900)


def _sizes(path: str) -> dict[str, int]:
    return {n: os.path.getsize(os.path.join(path, n)) for n in sorted(os.listdir(path)) if n.endswith(".log")}


def test_synced_records_survive_a_crash_copy_and_sealed_segments_end_with_their_last_record(tmp_path) -> None:
    d = str(tmp_path / "wal")
    log = SegmentedLog(d, preallocate=CHUNK, segment_bytes=100_000)
    for i in range(600):
        log.append(_payload(i))
        if i % 7 == 6:
            log.sync()
    log.sync()
    segs = log.segments()
    assert len(segs) > 3  # it rolled: sealed segments and an active one
    sizes = _sizes(d)
    for seg in segs[:-1]:  # sealed: the zeros cut off before the manifest
        assert seg.sealed and sizes[seg.name] == seg.bytes
        assert os.path.exists(os.path.join(d, manifest_name(seg.name)))
    active = segs[-1]
    assert sizes[active.name] > active.bytes  # the active one ends in zeros written ahead
    assert inspect_directory(d)["warnings"] == []  # a live log's zeros are no torn tail
    shutil.copytree(d, str(tmp_path / "crash"))  # what a killed process leaves (the page cache survives)
    log.close()
    assert _sizes(d)[active.name] == active.bytes  # a clean stop cuts the zeros off
    again = SegmentedLog(str(tmp_path / "crash"), preallocate=CHUNK, segment_bytes=100_000)
    try:
        assert again.recovery["torn_tail"] is None  # zeros are not a torn write
        assert again.recovery["zero_tail_bytes"] == sizes[active.name] - active.bytes
        assert [p for _, p in again.records()] == [_payload(i) for i in range(600)]
        again.append(b"after")
        again.sync()
    finally:
        again.close()
    assert list(SegmentedLog(str(tmp_path / "crash")).records())[-1] == (600, b"after")


def test_a_file_system_without_open_preallocated_appends(tmp_path) -> None:
    fs = CrashableMemoryFileSystem()
    log = SegmentedLog("/wal", fs=fs, preallocate=CHUNK)
    assert log.preallocate == 0
    log.append(b"x")
    log.sync()
    assert fs.size(f"/wal/{log.segments()[-1].name}") == log.segments()[-1].bytes


def test_the_server_default_and_its_setting() -> None:
    from flk.impl.server.config import ConfigError, load_config

    assert load_config(env={}, create_key=False).wal_preallocate == 1 << 20
    assert load_config(env={"WAL_PREALLOCATE": "0"}, create_key=False).wal_preallocate == 0
    for bad in ("-1", "lots", str(1 << 31)):
        try:
            load_config(env={"WAL_PREALLOCATE": bad}, create_key=False)
        except ConfigError as exc:
            assert "WAL_PREALLOCATE" in str(exc)
        else:
            raise AssertionError(f"WAL_PREALLOCATE={bad} was taken")


def _image(payloads: list[bytes], ahead: int) -> tuple[bytearray, list[int]]:
    """The bytes of a segment holding ``payloads`` followed by ``ahead`` zeros, and each frame's end."""
    data, ends = bytearray(), []
    for p in payloads:
        data += encode_frame(p)
        ends.append(len(data))
    return data + bytes(ahead), ends


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=1500),  # any bytes (zeros among them)
                          st.integers(1, 1500).map(lambda n: bytes((7 * i) % 255 + 1 for i in range(n)))),
                min_size=1, max_size=12), st.data())
def test_a_crash_during_writes_into_zeros_keeps_every_synced_record_and_reads_as_torn_never_corrupt(
        payloads, data) -> None:
    """The records up to ``synced`` were fsynced; the rest were written after the last fsync,
    and the crash kept any subset of their sectors (a disk writes a sector whole, in any order):
    each lost sector holds what it held at the last fsync -- the synced bytes, zeros after them."""
    synced = data.draw(st.integers(0, len(payloads)), label="synced")
    new, ends = _image(payloads, 3 * SECTOR)
    durable_end = ends[synced - 1] if synced else 0
    old = bytearray(new[:durable_end]) + bytes(len(new) - durable_end)
    image = bytearray(new)
    first_sector = durable_end - durable_end % SECTOR
    for s in range(first_sector, len(image), SECTOR):
        if data.draw(st.booleans(), label=f"sector {s} lost"):
            image[s:s + SECTOR] = old[s:s + SECTOR]
    res = scan_segment(bytes(image), is_last=True)
    assert res.status in ("clean", "torn"), res.reason
    got = [bytes(image[o:o + n]) for o, n in res.spans]
    assert got == payloads[:len(got)] and len(got) >= synced  # a prefix, every synced record in it
    at_sync = scan_segment(bytes(old), is_last=True)  # the state the last fsync left: its records, then zeros
    assert at_sync.status == "torn" and at_sync.zero_tail and at_sync.count == synced


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=1200).map(lambda b: bytes(x | 1 for x in b)), min_size=1, max_size=8),
       st.data())
def test_a_flipped_bit_in_a_complete_record_before_the_zeros_is_damage_not_a_torn_tail(payloads, data) -> None:
    """Records without zero bytes (a sector of zeros inside one would read as an unfinished write)."""
    image, ends = _image(payloads, 2 * SECTOR)
    bit = data.draw(st.integers(0, ends[-1] * 8 - 1), label="bit")
    image[bit // 8] ^= 1 << (bit % 8)
    res = scan_segment(bytes(image), is_last=True)
    assert res.status == "corrupt", (res.status, res.reason)
    assert scan_segment(bytes(image), is_last=False).status == "corrupt"


def test_an_unfinished_record_in_a_sealed_segment_is_damage(tmp_path) -> None:
    image, ends = _image([b"a" * 2000, b"b" * 2000], SECTOR)
    s = ends[0] + 600 + (-(ends[0] + 600)) % SECTOR  # a file-aligned sector inside the second record
    image[s:s + SECTOR] = bytes(SECTOR)  # lost: it holds zeros
    assert scan_segment(bytes(image), is_last=True).status == "torn"
    res = scan_segment(bytes(image), is_last=False)
    assert res.status == "corrupt" and "not the last segment" in res.reason


def test_open_preallocated_cuts_what_lies_past_the_records_and_writes_ahead(tmp_path) -> None:
    path = str(tmp_path / "seg.log")
    with open(path, "wb") as fh:
        fh.write(b"A" * 100 + b"junk-from-a-torn-write")
    handle = OsFileSystem().open_preallocated(path, 100, CHUNK)
    try:
        handle.write(b"B" * 10)
        handle.fsync()
        assert handle.size == 110
    finally:
        handle.close()
    with open(path, "rb") as fh:
        got = fh.read()
    assert got[:110] == b"A" * 100 + b"B" * 10 and not any(got[110:]) and len(got) >= 110 + CHUNK
