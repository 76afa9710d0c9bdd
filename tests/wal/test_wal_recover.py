"""SegmentedLog.recover: a full disk or a failed fsync no longer needs a restart.

After ENOSPC or EIO the log refuses work; ``recover()`` probes the disk (fails
while it is still full), cuts the active segment back to its last good fsync
and accepts appends again. Every record that was durable (acknowledged) before
the failure is kept exactly once, every record that was not is dropped, and a
power cut at any later point keeps exactly the acknowledged records.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.storage.fs import OsFileSystem
from flk.impl.storage.wal import SegmentedLog, WalError
from flk.impl.storage.walinspect import inspect_directory
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .faultfs import FaultFileSystem


def records(log: SegmentedLog) -> list[bytes]:
    return [bytes(p) for _, p in log.records()]


def test_disk_full_then_freed_recovers_in_place_on_the_real_disk(tmp_path) -> None:
    d = str(tmp_path / "wal")
    fs = FaultFileSystem(OsFileSystem())
    log = SegmentedLog(d, fs=fs, segment_bytes=400, flush_bytes=1)
    acked = [b"acked-%02d" % i for i in range(12)]
    for rec in acked:
        log.append(rec)
    log.sync()
    fs.full = True
    with pytest.raises(WalError, match="No space left"):
        log.append(b"lost-1")  # flush_bytes=1: the write happens (half of it) and fails
    assert log.failed is not None
    with pytest.raises(WalError, match="failed earlier"):
        log.append(b"lost-2")
    with pytest.raises(WalError, match="recovery failed"):
        log.recover()  # the probe write still fails: the log stays failed
    assert log.failed is not None
    fs.full = False
    info = log.recover()
    assert info == {"recovered": True, "dropped_records": 1, "segment": log.segments()[-1].name}
    assert log.failed is None and records(log) == acked
    assert log.append(b"after") == 12  # the dropped record's index is given out again
    log.sync()
    log.close()
    assert not any(n.endswith(".tmp") for n in os.listdir(d))  # the probe file is gone
    with SegmentedLog(d) as again:
        assert records(again) == acked + [b"after"]
    assert inspect_directory(d)["ok"]


def test_failed_fsync_recovers_and_a_power_cut_keeps_exactly_the_acknowledged() -> None:
    mem = CrashableMemoryFileSystem()
    fs = FaultFileSystem(mem)
    log = SegmentedLog("/wal", fs=fs, segment_bytes=10_000)
    for i in range(5):
        log.append(b"a%d" % i)
    log.sync()
    log.append(b"unacked")
    fs.fail_fsyncs(1)
    with pytest.raises(WalError, match="fsync failed"):
        log.sync()
    assert log.durable_index == 5
    log.recover()
    assert records(log) == [b"a%d" % i for i in range(5)]
    log.append(b"b0")
    log.sync()
    mem.crash()
    with SegmentedLog("/wal", fs=mem) as again:
        assert records(again) == [b"a0", b"a1", b"a2", b"a3", b"a4", b"b0"]


def test_recover_on_a_healthy_log_does_nothing() -> None:
    log = SegmentedLog("/wal", fs=CrashableMemoryFileSystem())
    log.append(b"x")
    assert log.recover()["recovered"] is False and records(log) == [b"x"]


def test_a_seal_that_fails_half_way_is_finished_by_recover() -> None:
    mem = CrashableMemoryFileSystem()
    fs = FaultFileSystem(mem)
    log = SegmentedLog("/wal", fs=fs, segment_bytes=10_000, flush_bytes=1)  # appends write through
    for i in range(4):
        log.append(b"s%d" % i)
    fs.full = True  # the segment's fsync works (nothing new to write); its manifest does not fit
    with pytest.raises(WalError, match="sealing"):
        log.seal()
    assert log.durable_index == 4  # the fsync before the manifest made them durable
    fs.full = False
    log.recover()
    log.append(b"next")
    log.sync()
    assert records(log) == [b"s0", b"s1", b"s2", b"s3", b"next"]
    mem.crash()
    with SegmentedLog("/wal", fs=mem) as again:
        assert records(again) == [b"s0", b"s1", b"s2", b"s3", b"next"]


OPS = st.sampled_from(["append", "append", "append", "sync", "seal", "full", "free", "eio", "recover", "crash"])


@settings(max_examples=200, deadline=None)
@given(script=st.lists(OPS, max_size=60))
def test_inv_no_acked_loss_across_disk_full_eio_recoveries_and_power_cuts(script) -> None:
    mem = CrashableMemoryFileSystem()
    fs = FaultFileSystem(mem)
    log = SegmentedLog("/wal", fs=fs, segment_bytes=120, flush_bytes=40)
    appended: list[bytes] = []  # in index order: a record's index is its position
    acked = 0  # every record below was durable (acknowledged) at some point
    for step, op in enumerate(script):
        try:
            if op == "append":
                assert log.append(b"r%03d" % step) == len(appended)
                appended.append(b"r%03d" % step)
            elif op == "sync":
                log.sync()
            elif op == "seal":
                log.seal()
            elif op == "recover" and log.recover()["recovered"]:
                del appended[log.durable_index:]
                assert records(log) == appended
        except WalError:
            assert log.failed is not None
        if op in ("full", "free"):
            fs.full = op == "full"
        elif op == "eio":
            fs.fail_fsyncs(1)
        elif op == "crash":
            fs.full = False
            fs.fail_fsyncs(0)
            mem.crash()
            log = SegmentedLog("/wal", fs=fs, segment_bytes=120, flush_bytes=40)
            assert records(log) == appended[:acked]  # exactly the acknowledged, once each
            del appended[acked:]
        assert log.durable_index >= acked  # durability never goes back
        acked = log.durable_index
    fs.full = False
    fs.fail_fsyncs(0)
    if log.recover()["recovered"]:
        del appended[log.durable_index:]
    log.sync()
    assert records(log) == appended
    mem.crash()
    with SegmentedLog("/wal", fs=mem) as again:
        assert records(again) == appended
